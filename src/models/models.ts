import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Model, ModelDeleted } from 'openai/resources/models';
import { ServiceError } from '../errors.js';
import type { FineTunedModelTable } from '../store/schema.js';
import type { Db } from '../store/store.js';
import type { BaseModelRegistry } from './base-models.js';

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
}

/** What `/v1/models` shows an organization: every base model, and its own fine-tunes and checkpoints. */
export class ModelService {
  constructor(
    private readonly db: Db,
    private readonly baseModels: BaseModelRegistry,
  ) {}

  async list(orgId: string): Promise<Model[]> {
    const base = this.baseModels.list().map(
      (m): Model => ({ id: m.name, object: 'model', created: m.created, owned_by: 'system' }),
    );
    const tuned = await this.owned(orgId).orderBy('created_at', 'asc').orderBy('id', 'asc').execute();
    return [...base, ...tuned.map(toModel)];
  }

  async retrieve(orgId: string, id: string): Promise<Model> {
    const base = this.baseModels.get(id);
    if (base) return { id: base.name, object: 'model', created: base.created, owned_by: 'system' };
    const row = await this.owned(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw modelNotFound(id);
    return toModel(row);
  }

  /** Where a model the organization may use lives: base models, its fine-tunes and their checkpoints. */
  async servable(orgId: string, id: string): Promise<ServableModel> {
    const base = this.baseModels.get(id);
    if (base) return { id, weights: base.path, adapter: null };
    const row = await this.owned(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw modelNotFound(id);
    // Full fine-tunes are whole model folders; LoRA ones are adapters over their base.
    if (!fs.existsSync(path.join(row.path, 'adapter_config.json'))) return { id, weights: row.path, adapter: null };
    const parent = this.baseModels.get(row.base_model);
    if (!parent) {
      throw new ServiceError(
        'not_found',
        `The base model \`${row.base_model}\` of \`${id}\` is no longer on this server; an administrator can add it back with \`tunelab models add\`.`,
        { param: 'model', code: 'model_not_found' },
      );
    }
    return { id, weights: parent.path, adapter: row.path };
  }

  /** Records a model a job produced; the folder it names becomes the model's to delete. */
  async registerFineTuned(model: FineTunedModelTable, db: Db = this.db): Promise<Model> {
    await db.insertInto('fine_tuned_models').values(model).execute();
    return toModel(model);
  }

  /** The folders a job's models live in. */
  async folders(jobId: string): Promise<string[]> {
    const rows = await this.db.selectFrom('fine_tuned_models').select('path').where('job_id', '=', jobId).execute();
    return rows.map((row) => row.path);
  }

  /**
   * Forgets a model; returns its folder when no other model names it, for the caller to remove
   * once the transaction `db` belongs to has committed.
   */
  async unregister(id: string, db: Db = this.db): Promise<string | null> {
    const row = await db.deleteFrom('fine_tuned_models').where('id', '=', id).returning('path').executeTakeFirst();
    if (!row) return null;
    // Kept while another model names the same folder.
    const sharing = await db.selectFrom('fine_tuned_models').select('id').where('path', '=', row.path).executeTakeFirst();
    return sharing ? null : row.path;
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
    const folder = await this.unregister(id);
    if (folder) await fsp.rm(folder, { recursive: true, force: true });
    return { id, object: 'model', deleted: true };
  }

  private owned(orgId: string) {
    return this.db.selectFrom('fine_tuned_models').selectAll().where('org_id', '=', orgId);
  }
}

const toModel = (row: FineTunedModelTable): Model => ({
  id: row.id,
  object: 'model',
  created: row.created_at,
  owned_by: row.org_id,
});
