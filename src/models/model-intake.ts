import fs from 'node:fs';
import { invalidRequest } from '../errors.js';
import { checkArrival, saveArrivalReport, type ArrivalReport } from './arrival-check.js';
import type { BaseModel, BaseModelRegistry } from './base-models.js';
import { parseRepoReference, pullModel, type PullOptions, type PullResult } from './hub-pull.js';

export interface AddedModel {
  model: BaseModel;
  report: ArrivalReport;
}

/**
 * The one way a base model comes in, from a folder or from the hub: registered, then checked
 * on arrival; one that fails the check is unregistered again and the reason is the error.
 */
export async function addBaseModel(registry: BaseModelRegistry, source: string, name: string): Promise<AddedModel> {
  const existing = registry.get(name);
  const model = existing && fs.realpathSync(existing.path) === fs.realpathSync(source) ? existing : registry.add(source, name);
  const report = await checkArrival(model.path);
  if (!report.usable) {
    if (model !== existing) registry.remove(name);
    throw invalidRequest(`${name} cannot be used: ${report.problem}`, 'model', 'unusable_model');
  }
  saveArrivalReport(registry.dir, name, report);
  return { model, report };
}

/** `owner/name[@revision]` from the hub into its cache, then added as `name` (default: the repository's name, lower case). */
export async function pullBaseModel(
  registry: BaseModelRegistry,
  reference: string,
  options: Omit<PullOptions, 'revision'> & { name?: string } = {},
): Promise<AddedModel & { pull: PullResult }> {
  const { repo, revision } = parseRepoReference(reference);
  const name = options.name ?? repo.split('/')[1]!.toLowerCase();
  const existing = registry.get(name);
  const pull = await pullModel(repo, { ...options, revision });
  if (existing && fs.realpathSync(existing.path) !== fs.realpathSync(pull.folder)) {
    throw invalidRequest(`A base model named "${name}" is already registered (${existing.path}); choose another --name.`, 'name');
  }
  return { ...(await addBaseModel(registry, pull.folder, name)), pull };
}
