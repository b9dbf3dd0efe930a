import { autoEpochs } from '../datasets/stats.js';
import { type TrainingDefaults, baseLearningRate } from '../models/training-defaults.js';
import type { SupervisedHyperparameters } from './job-request.js';

export interface ResolvedHyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  /** Ours: present when the job trains by LoRA. */
  lora_rank?: number;
  lora_alpha?: number;
  full: boolean;
}

/**
 * Turns "auto" into numbers when a job starts (README, "Hyperparameters"):
 * - n_epochs: OpenAI's rule (about 100 example passes for small files, 3 in the middle).
 * - batch_size: 1 below 128 examples, then examples / 64 rounded down to a power of two, at most
 *   16: small datasets need many small steps to be learned at all.
 * - learning_rate_multiplier: the square root of the batch size (Adam's usual scaling: larger
 *   batches take fewer, surer steps), applied to the base model's own rate.
 */
export function resolveHyperparameters(
  given: SupervisedHyperparameters,
  nExamples: number,
  defaults: TrainingDefaults,
): ResolvedHyperparameters {
  const batchSize = given.batch_size === undefined || given.batch_size === 'auto' ? autoBatchSize(nExamples) : given.batch_size;
  const multiplier =
    given.learning_rate_multiplier === undefined || given.learning_rate_multiplier === 'auto'
      ? Math.round(Math.sqrt(batchSize) * 100) / 100
      : given.learning_rate_multiplier;
  const full = given.full ?? defaults.method === 'full';
  return {
    n_epochs: given.n_epochs === undefined || given.n_epochs === 'auto' ? autoEpochs(nExamples) : given.n_epochs,
    batch_size: batchSize,
    learning_rate_multiplier: multiplier,
    ...(full ? {} : { lora_rank: given.lora_rank ?? defaults.lora_rank, lora_alpha: given.lora_alpha ?? defaults.lora_alpha }),
    full,
  };
}

export function autoBatchSize(nExamples: number): number {
  const share = Math.floor(nExamples / 64);
  if (share < 2) return 1;
  return Math.min(16, 2 ** Math.floor(Math.log2(share)));
}

/** The peak learning rate the engine uses: the base model's rate for its method, times the multiplier. */
export function learningRate(resolved: ResolvedHyperparameters, defaults: TrainingDefaults): number {
  return baseLearningRate(defaults, resolved.full) * resolved.learning_rate_multiplier;
}
