import fs from 'node:fs';
import path from 'node:path';

/**
 * How a base model is fine-tuned unless a job says otherwise. Real models train by LoRA at the
 * learning rates LoRA is known to work with on small datasets; a model folder may hold a
 * `tunelab.json` saying otherwise (the built-in tiny model trains fully, from its own recipe).
 */
export interface TrainingDefaults {
  method: 'lora' | 'full';
  /** Peak learning rate at batch size 1 and multiplier 1. */
  learning_rate: number;
  lora_rank: number;
  lora_alpha: number;
  /** Warmup as a share of all steps. */
  warmup_ratio: number;
  lr_schedule: 'cosine' | 'linear' | 'constant';
  /** Further engine spec fields (engine/README.md), passed as they are. */
  engine: Record<string, unknown>;
}

export const DEFAULT_TRAINING: TrainingDefaults = {
  method: 'lora',
  learning_rate: 2e-4,
  lora_rank: 8,
  lora_alpha: 16,
  warmup_ratio: 0.05,
  lr_schedule: 'cosine',
  engine: {},
};

/** Full fine-tuning moves every weight: a tenth of LoRA's rate. */
const FULL_LEARNING_RATE = 2e-5;

/** The model's rate when the job trains the way the model is meant to, else the usual rate for the other way. */
export function baseLearningRate(defaults: TrainingDefaults, full: boolean): number {
  if (full === (defaults.method === 'full')) return defaults.learning_rate;
  return full ? FULL_LEARNING_RATE : DEFAULT_TRAINING.learning_rate;
}

const KNOWN = new Set(['method', 'learning_rate', 'lora_rank', 'lora_alpha', 'warmup_ratio', 'lr_schedule']);

export function trainingDefaults(modelFolder: string): TrainingDefaults {
  const file = path.join(modelFolder, 'tunelab.json');
  if (!fs.existsSync(file)) return DEFAULT_TRAINING;
  let given: Record<string, unknown>;
  try {
    given = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file} cannot be read as JSON: ${(error as Error).message}`);
  }
  const method = given.method === 'full' ? 'full' : 'lora';
  const engine = Object.fromEntries(Object.entries(given).filter(([key]) => !KNOWN.has(key)));
  return {
    ...DEFAULT_TRAINING,
    learning_rate: method === 'full' ? FULL_LEARNING_RATE : DEFAULT_TRAINING.learning_rate,
    ...(given as Partial<TrainingDefaults>),
    method,
    engine,
  };
}
