import fs from 'node:fs';
import path from 'node:path';
import { type ModelShape, loraParameters, storedParameters } from './checkpoint-space.js';

/** Weights are held in fp32 at most while training. */
const WEIGHT_BYTES = 4;
/** Per trained parameter: its gradient (fp32) and AdamW's two moments. */
const TRAINED_BYTES = 12;
/** Activations and the allocator's slack, as a share of the weights: an estimate on the high side for the engine's packed rows. */
const ACTIVATION_SHARE = 0.5;

/** The memory training a job takes, in bytes, and how much of it splits across the GPUs that train it together. */
export interface MemoryNeed {
  /** On one device, training alone. */
  bytes: number;
  /**
   * Of `bytes`, what FSDP shards across N processes (full fine-tuning: the weights, their gradients
   * and AdamW's moments); 0 for LoRA, where every process holds the whole model.
   */
  sharded: number;
}

/**
 * The memory training a job on `modelFolder` takes: what a worker must have (its GPU's, or its RAM
 * without one) to be given the job. An estimate from the model's shape, not a measure.
 */
export function trainingMemory(modelFolder: string, training: { full: boolean; loraRank: number }): MemoryNeed {
  const config = JSON.parse(fs.readFileSync(path.join(modelFolder, 'config.json'), 'utf8')) as ModelShape;
  const weights = storedParameters(modelFolder, config) * WEIGHT_BYTES;
  const trained = training.full ? weights / WEIGHT_BYTES : loraParameters(config, training.loraRank);
  const states = weights + trained * TRAINED_BYTES;
  return { bytes: Math.ceil(states + weights * ACTIVATION_SHARE), sharded: training.full ? Math.ceil(states) : 0 };
}

