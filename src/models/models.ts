import fs from 'node:fs';
import path from 'node:path';
import type { Model, ModelDeleted } from 'openai/resources/models';
import { ServiceError } from '../errors.js';
import type { FolderStore } from '../files/folder-store.js';
import type { FineTunedModelTable } from '../store/schema.js';
import type { Db } from '../store/store.js';
import { readArrivalReport } from './arrival-check.js';
import type { BaseModel, BaseModelRegistry } from './base-models.js';
import { readModelFacts, type ModelFacts } from './model-facts.js';

export const modelNotFound = (id: string, param: string | null = 'model') =>
  new ServiceError('not_found', `The model \`${id}\` does not exist or you do not have access to it.`, {
    param,
    code: 'model_not_found',
  });

/** What a model id stands for when it is asked to generate. */
export interface ServableModel {
  id: string;
  /** The model folder an engine loads: the base model's, or a full fine-tune's own (tokenizer included). */
  weights: string;
  /** A LoRA fine-tune's adapter folder (PEFT layout), applied on top of `weights`; null otherwise. */
  adapter: string | null;
  /** The model whose folder `weights` is: a base model or a full fine-tune. */
  weightsModel: string;
  /** The base model at the root of its lineage (a fine-tune of a fine-tune goes back to one). */
  root: string;
}

/** What `/v1/models` shows an organization: every base model, and its own fine-tunes and checkpoints. */
export class ModelService {
  constructor(
    private readonly db: Db,
    private readonly baseModels: BaseModelRegistry,
    /** Where fine-tunes and checkpoints are kept (their rows name locations in it), and where this host fetches them to when it is not a local folder. */
    private readonly store: { folders: FolderStore; fetched: string },
  ) {}

  async list(orgId: string): Promise<Model[]> {
    const base = this.baseModels.list().map((m) => this.baseModelObject(m));
    const tuned = await this.owned(orgId).orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    const from = await this.trainedFrom(tuned);
    return [...base, ...tuned.map((row) => toModel(row, from.get(row.job_id)))];
  }

  async retrieve(orgId: string, id: string): Promise<Model> {
    const base = this.baseModels.get(id);
    if (base) return this.baseModelObject(base);
    const row = await this.owned(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw modelNotFound(id);
    return toModel(row, (await this.trainedFrom([row])).get(row.job_id));
  }

  /** The model each row's job trained from (its `model`: a base model, or a fine-tune it continued), by job id. */
  private async trainedFrom(rows: FineTunedModelTable[]): Promise<Map<string, string>> {
    const ids = [...new Set(rows.map((row) => row.job_id))];
    if (!ids.length) return new Map();
    const jobs = await this.db.selectFrom('jobs').select(['id', 'model']).where('id', 'in', ids).execute();
    return new Map(jobs.map((job) => [job.id, job.model]));
  }

  /** Where a model the organization may use lives: base models, its fine-tunes and their checkpoints. */
  async servable(orgId: string, id: string): Promise<ServableModel> {
    const base = this.baseModels.get(id);
    if (base) return { id, weights: base.path, adapter: null, weightsModel: id, root: id };
    const row = await this.owned(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw modelNotFound(id);
    const folder = await this.store.folders.open(row.path, path.join(this.store.fetched, row.id.replace(/[^A-Za-z0-9_.-]/g, '_')));
    // Full fine-tunes are whole model folders (their base_model: the root of their lineage).
    if (!fs.existsSync(path.join(folder, 'adapter_config.json'))) return { id, weights: folder, adapter: null, weightsModel: id, root: row.base_model };
    // LoRA ones are adapters over their base's weights: a base model's, or a full fine-tune's that training continued.
    const parent = await this.servable(orgId, row.base_model).catch((error: unknown) => {
      if (!(error instanceof ServiceError && error.kind === 'not_found')) throw error;
      throw new ServiceError(
        'not_found',
        `The base model \`${row.base_model}\` of \`${id}\` is no longer on this server; an administrator can add it back with \`tunelab models add\`.`,
        { param: 'model', code: 'model_not_found' },
      );
    });
    return { id, weights: parent.weights, adapter: folder, weightsModel: parent.weightsModel, root: parent.root };
  }

  /** Records a model a job produced; the folder-store location it names becomes the model's to delete. */
  async registerFineTuned(model: FineTunedModelTable, db: Db = this.db): Promise<Model> {
    await db.insertInto('fine_tuned_models').values(model).execute();
    return toModel(model, undefined);
  }

  /**
   * Forgets a model; returns its location when no other model names it and no job resumes from it,
   * for the caller to remove once the transaction `db` belongs to has committed.
   */
  async unregister(id: string, db: Db = this.db): Promise<string | null> {
    const row = await db.deleteFrom('fine_tuned_models').where('id', '=', id).returning('path').executeTakeFirst();
    if (!row) return null;
    // Kept while another model names the same folder, or a running job continues from it.
    const sharing = await db.selectFrom('fine_tuned_models').select('id').where('path', '=', row.path).executeTakeFirst();
    const resuming = await db.selectFrom('jobs').select('id').where('resume_location', '=', row.path).executeTakeFirst();
    return sharing || resuming ? null : row.path;
  }

  async delete(orgId: string, id: string): Promise<ModelDeleted> {
    if (this.baseModels.get(id)) {
      throw new ServiceError(
        'permission',
        `Base model \`${id}\` cannot be deleted through the API; an administrator removes it from the server's models folder.`,
        { param: 'model' },
      );
    }
    const row = await this.owned(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw modelNotFound(id);
    const location = await this.unregister(id);
    if (location) await this.store.folders.remove(location);
    return { id, object: 'model', deleted: true };
  }

  /** A base model as OpenAI's Model, with ours: what its arrival check found (`tunelab models add` or `pull`). */
  private baseModelObject(model: BaseModel): Model & { details?: BaseModelDetails } {
    const details = readDetails(this.baseModels.dir, model);
    return { id: model.name, object: 'model', created: model.created, owned_by: 'system', ...(details && { details }) };
  }

  private owned(orgId: string) {
    return this.db.selectFrom('fine_tuned_models').selectAll().where('org_id', '=', orgId);
  }
}

/** OpenAI's Model, with ours: `fine_tuned_from`, the model the job trained from (its lineage, one step back). */
const toModel = (row: FineTunedModelTable, trainedFrom: string | undefined): Model & { fine_tuned_from?: string } => ({
  id: row.id,
  object: 'model',
  created: row.created_at,
  owned_by: row.org_id,
  ...(trainedFrom ? { fine_tuned_from: trainedFrom } : {}),
});

export interface BaseModelDetails {
  model_type: string | null;
  parameters: number | null;
  dtype: string | null;
  context_length: number | null;
  /** Estimates in bytes; see model-facts.ts for what each counts. */
  memory_bytes: { serve: number; train_lora: number; train_full: number } | null;
  /** Whether the engine loaded it on arrival (false: more memory than the host had, or never checked). */
  loaded: boolean;
  /** When it was checked on arrival; null for a model put in the models folder by hand (its files' facts only). */
  checked_at: number | null;
}

/** The arrival report, or for a model that never had one (linked by hand, the built-in one) what its files say. */
function readDetails(modelsDir: string, model: BaseModel): BaseModelDetails | null {
  const report = readArrivalReport(modelsDir, model.name);
  if (report) return baseModelDetails(report);
  try {
    const facts = readModelFacts(model.path);
    return baseModelDetails({ ...facts, loaded: false, checkedAt: null });
  } catch {
    return null;
  }
}

const baseModelDetails = (report: Partial<ModelFacts> & { loaded: boolean; checkedAt: number | null }): BaseModelDetails => ({
  model_type: report.modelType ?? null,
  parameters: report.parameters ?? null,
  dtype: report.dtype ?? null,
  context_length: report.contextLength ?? null,
  memory_bytes: report.memory ? { serve: report.memory.serve, train_lora: report.memory.trainLora, train_full: report.memory.trainFull } : null,
  loaded: report.loaded,
  checked_at: report.checkedAt,
});
