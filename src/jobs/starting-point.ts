import fs from 'node:fs';
import path from 'node:path';
import { ServiceError, invalidRequest } from '../errors.js';
import type { BaseModel, BaseModelRegistry } from '../models/base-models.js';
import type { ModelService } from '../models/models.js';

/**
 * What a job trains from. A job's `model` is a base model, or one of the organization's own
 * fine-tunes or checkpoints (any method): training then continues from its weights, a LoRA
 * fine-tune from its adapter. The root base model gives the tokenizer, chat template, context,
 * training defaults and the `ft:` name's base segment.
 */
export interface StartingPoint {
  /** The base model at the root of the lineage. */
  root: BaseModel;
  /** The model folder the engine loads: the root's, or a full fine-tune's own. */
  weights: string;
  /** The model whose folder `weights` is (a LoRA fine-tune made from this job sits on it). */
  weightsModel: string;
  /** The adapter a LoRA fine-tune continues; null from a base model or a full fine-tune. */
  adapter: { path: string; rank: number; alpha: number } | null;
  /** The fine-tune or checkpoint continued, or null when the job starts from a base model. */
  parent: string | null;
}

/** The starting point of `model` for an organization; a 400 naming `model` when it has none. */
export async function startingPoint(models: ModelService, baseModels: BaseModelRegistry, orgId: string, model: string): Promise<StartingPoint> {
  const servable = await models.servable(orgId, model).catch((error: unknown) => {
    if (!(error instanceof ServiceError && error.kind === 'not_found')) throw error;
    const known = baseModels.list().map((m) => m.name);
    throw invalidRequest(
      `Model ${model} is not available for fine-tuning or does not exist. ` +
        (known.length ? `Available base models: ${known.join(', ')}; or one of your own fine-tuned models or checkpoints.` : 'No base models are registered (tunelab models add).'),
      'model',
      'model_not_available',
    );
  });
  const root = baseModels.get(servable.root);
  if (!root) {
    throw invalidRequest(`Model ${model} was fine-tuned from ${servable.root}, which is no longer on this server.`, 'model', 'model_not_available');
  }
  return {
    root,
    weights: servable.weights,
    weightsModel: servable.weightsModel,
    adapter: servable.adapter ? { path: servable.adapter, ...adapterShape(servable.adapter) } : null,
    parent: servable.id === root.name ? null : servable.id,
  };
}

/** A LoRA fine-tune is continued with its own rank and alpha; a job asking for others, or for full training, is refused. */
export function checkContinuation(start: StartingPoint, asked: { full?: boolean | undefined; lora_rank?: number | undefined; lora_alpha?: number | undefined }, param: string): void {
  if (!start.adapter) return;
  if (asked.full) {
    throw invalidRequest(`${start.parent} is a LoRA fine-tune: training continues its adapter, so full fine-tuning cannot start from it.`, `${param}.full`);
  }
  for (const [key, own] of [['lora_rank', start.adapter.rank], ['lora_alpha', start.adapter.alpha]] as const) {
    if (asked[key] !== undefined && asked[key] !== own) {
      throw invalidRequest(`${start.parent} is a LoRA fine-tune with ${key} ${own}: training continues its adapter, so ${key} must be ${own} or left out.`, `${param}.${key}`);
    }
  }
}

function adapterShape(folder: string): { rank: number; alpha: number } {
  const config = JSON.parse(fs.readFileSync(path.join(folder, 'adapter_config.json'), 'utf8')) as { r?: unknown; lora_alpha?: unknown };
  if (typeof config.r !== 'number' || typeof config.lora_alpha !== 'number') throw new Error(`${folder}/adapter_config.json lacks r or lora_alpha`);
  return { rank: config.r, alpha: config.lora_alpha };
}
