import { readHomeConfig } from '../config.js';
import { ServiceError, noSuch } from '../errors.js';
import { newId } from '../ids.js';
import type { Administrators, Organization } from '../orgs/orgs.js';
import type { ArrivalReport } from './arrival-check.js';
import type { BaseModelRegistry } from './base-models.js';
import { parseRepoReference } from './hub-pull.js';
import { pullBaseModel } from './model-intake.js';

/** A pull the server runs for an administrator's key: `tunelab models pull` behind the API. */
export interface ModelPull {
  id: string;
  object: 'model.pull';
  repo: string;
  name: string | null;
  status: 'running' | 'succeeded' | 'failed';
  received_bytes: number;
  total_bytes: number | null;
  created_at: number;
  /** The registered model's name once it has succeeded. */
  model: string | null;
  /** What was learned on arrival, once it has succeeded. */
  details: ArrivalReport | null;
  error: { message: string; code: string | null } | null;
}

/**
 * `<home>/config.json`'s `{"models": {"pull_organizations": ["personal"]}}`: the organizations whose
 * keys may add base models. Base models are shared by every organization, so by default only the
 * administrator's own (the one made at first start) may.
 */
export function loadPullOrganizations(home: string): string[] {
  return readHomeConfig(
    home,
    (config) => {
      const section = config.models as { pull_organizations?: unknown } | undefined;
      const list = section?.pull_organizations;
      if (list === undefined) return ['personal'];
      if (!Array.isArray(list) || !list.every((name) => typeof name === 'string')) throw new Error('models.pull_organizations must be a list of organization names');
      return list as string[];
    },
    ['personal'],
  );
}

/** Pulls run in the server, one record each, kept while the server runs; the cache keeps the files across restarts. */
export class ModelPullService {
  private readonly pulls = new Map<string, ModelPull>();

  constructor(
    private readonly registry: BaseModelRegistry,
    private readonly administrators: Administrators,
  ) {}

  /** Throws unless the organization may add base models. */
  authorize(org: Organization): void {
    this.administrators.require(org, 'add base models: they are shared by every organization');
  }

  list(org: Organization): ModelPull[] {
    this.authorize(org);
    return [...this.pulls.values()].sort((a, b) => b.created_at - a.created_at);
  }

  get(org: Organization, id: string): ModelPull {
    this.authorize(org);
    const pull = this.pulls.get(id);
    if (!pull) throw noSuch('model.pull', id);
    return pull;
  }

  start(org: Organization, repo: string, name: string | undefined): ModelPull {
    this.authorize(org);
    const { repo: id } = parseRepoReference(repo);
    // Two pulls of one repository would write the same partial files in the cache.
    const running = [...this.pulls.values()].find((pull) => pull.status === 'running' && parseRepoReference(pull.repo).repo === id);
    if (running) throw new ServiceError('conflict', `${id} is being pulled already (${running.id}); follow it with GET /v1/models/pulls/${running.id}.`, { param: 'repo' });
    const pull: ModelPull = {
      id: newId('pull_'),
      object: 'model.pull',
      repo,
      name: name ?? null,
      status: 'running',
      received_bytes: 0,
      total_bytes: null,
      created_at: Math.floor(Date.now() / 1000),
      model: null,
      details: null,
      error: null,
    };
    this.pulls.set(pull.id, pull);
    pullBaseModel(this.registry, repo, {
      name,
      onPlan: ({ totalBytes }) => (pull.total_bytes = totalBytes),
      onProgress: ({ receivedBytes, totalBytes }) => {
        if (totalBytes > 0) pull.received_bytes = receivedBytes;
      },
    }).then(
      ({ model, report }) => Object.assign(pull, { status: 'succeeded', model: model.name, details: report }),
      (error: Error) => Object.assign(pull, { status: 'failed', error: { message: error.message, code: error instanceof ServiceError ? error.code : null } }),
    );
    return { ...pull };
  }
}
