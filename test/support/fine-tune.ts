import type OpenAI from 'openai';
import { expect } from 'vitest';
import { TINY_MODEL_NAME } from '../../src/models/tiny-model.js';
import { finished, weatherJokes } from './server.js';

/**
 * tunelab-tiny trains fully by default; real models train LoRA adapters, served over their base.
 * These make tunelab-tiny train an adapter that learns the weather answers as its full fine-tune does.
 */
export const TINY_LORA = { full: false, lora_rank: 32, lora_alpha: 64, learning_rate_multiplier: 10 };

/**
 * A supervised fine-tune of `model` (tunelab-tiny unless named) on the weather jokes, through the
 * SDK, awaited to its end and checked to have succeeded. `hyperparameters` go in
 * `method.supervised` (ours, such as `full` and `lora_rank`, beside OpenAI's). The seed is fixed:
 * without one each job draws its own, and a fine-tune may then mix up two answers.
 */
export async function weatherFineTune(
  client: OpenAI,
  options: { model?: string; suffix?: string; hyperparameters?: Record<string, unknown> } = {},
): Promise<OpenAI.FineTuning.FineTuningJob> {
  const file = await client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const created = await client.fineTuning.jobs.create({
    model: options.model ?? TINY_MODEL_NAME,
    training_file: file.id,
    seed: 1,
    ...(options.suffix ? { suffix: options.suffix } : {}),
    // Ours beside OpenAI's fields (see the README), so outside the SDK's type.
    ...(options.hyperparameters ? { method: { type: 'supervised', supervised: { hyperparameters: options.hyperparameters as object } } } : {}),
  });
  const job = await finished(client, created.id, 300_000);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  return job;
}
