import type OpenAI from 'openai';
import { vi } from 'vitest';
import type { FineTuningJob } from '../../src/jobs/jobs.js';
import { BASE_MODEL, type TestServer, validated, weatherJokes } from './server.js';

export type Finish = 'succeeded' | 'failed' | 'cancelled';

export const ENGINE_ERROR = { code: 'engine_error', message: 'The engine ran out of memory at step 12.', param: null };

/**
 * A job driven to a finished state through the server's job service, as the runner moves it:
 * validated by the real pipeline, then queued -> running -> succeeded (with trained tokens and a
 * model) or failed (with an error), or cancelled by the user. With `at`, the final move happens
 * at that moment of the (faked) clock: the server runs in this process.
 */
export async function finishJob(
  t: TestServer,
  how: Finish,
  options: { client?: OpenAI; trainedTokens?: number; suffix?: string; at?: string } = {},
): Promise<FineTuningJob> {
  const client = options.client ?? t.client;
  const file = await client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const suffix = options.suffix ?? 'notify';
  const created = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id, suffix });
  const job = await validated(client, created.id);
  if (job.status !== 'queued') throw new Error(`${job.id} is ${job.status} after validation: ${JSON.stringify(job.error)}`);
  const jobs = t.server.services.jobs;
  if (how !== 'cancelled') await jobs.move(job.id, 'queued', 'running', { message: 'Fine-tuning job started' });
  if (options.at) vi.useFakeTimers({ toFake: ['Date'], now: new Date(options.at) });
  try {
    return await finish(t, job, how, suffix, options.trainedTokens);
  } finally {
    if (options.at) vi.useRealTimers();
  }
}

function finish(t: TestServer, job: { id: string; organization_id: string }, how: Finish, suffix: string, trainedTokens?: number) {
  const jobs = t.server.services.jobs;
  if (how === 'cancelled') return jobs.act(job.organization_id, job.id, 'cancel');
  if (how === 'failed') {
    return jobs.move(job.id, 'running', 'failed', { level: 'error', message: ENGINE_ERROR.message }, { error: JSON.stringify(ENGINE_ERROR) });
  }
  return jobs.move(
    job.id,
    'running',
    'succeeded',
    { message: 'The job has successfully completed' },
    { trained_tokens: trainedTokens ?? 12_345, fine_tuned_model: `ft:${BASE_MODEL}:personal:${suffix}:${job.id.slice(6, 14)}` },
  );
}

/** Polls until `check` returns something other than undefined. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`still waiting after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
