import { autoEpochs } from '../datasets/stats.js';
import { type TrainingDefaults, baseLearningRate } from '../models/training-defaults.js';
import type { DpoHyperparameters, SupervisedHyperparameters } from './job-request.js';

/** DPO's beta when "auto": the DPO paper's and TRL's default. */
export const AUTO_BETA = 0.1;

export interface ResolvedHyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  /** Ours: present when the job trains by LoRA. */
  lora_rank?: number;
  lora_alpha?: number;
  full: boolean;
  /** DPO only: how far the policy may move from the reference (higher: less). */
  beta?: number;
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
  given: SupervisedHyperparameters | DpoHyperparameters,
  nExamples: number,
  defaults: TrainingDefaults,
  /** The LoRA adapter a job continues: its rank and alpha are the job's (starting-point.ts). */
  continued: { rank: number; alpha: number } | null = null,
): ResolvedHyperparameters {
  const batchSize = given.batch_size === undefined || given.batch_size === 'auto' ? autoBatchSize(nExamples) : given.batch_size;
  const multiplier =
    given.learning_rate_multiplier === undefined || given.learning_rate_multiplier === 'auto'
      ? Math.round(Math.sqrt(batchSize) * 100) / 100
      : given.learning_rate_multiplier;
  const full = continued ? false : (given.full ?? defaults.method === 'full');
  const lora = continued ? { lora_rank: continued.rank, lora_alpha: continued.alpha } : { lora_rank: given.lora_rank ?? defaults.lora_rank, lora_alpha: given.lora_alpha ?? defaults.lora_alpha };
  return {
    n_epochs: given.n_epochs === undefined || given.n_epochs === 'auto' ? autoEpochs(nExamples) : given.n_epochs,
    batch_size: batchSize,
    learning_rate_multiplier: multiplier,
    ...(full ? {} : lora),
    full,
    ...('beta' in given ? { beta: given.beta === undefined || given.beta === 'auto' ? AUTO_BETA : given.beta } : {}),
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
