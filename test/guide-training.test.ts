import type OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { type TestServer, allEvents, finished, startTestServer, weatherJokes } from './support/server.js';

let t: TestServer;
let client: OpenAI;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  client = t.client;
}, 120_000);
afterAll(() => t.cleanup());

it('runs the guide on the built-in tunelab-tiny: 10 auto epochs, events, checkpoints, a falling loss, the ft: model, usage', async () => {
  expect((await client.models.retrieve(TINY_MODEL_NAME)).owned_by).toBe('system');

  const file = await client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const created = await client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: file.id, suffix: 'weather' });
  expect(created.hyperparameters).toEqual({ n_epochs: 'auto', batch_size: 'auto', learning_rate_multiplier: 'auto' });
  const job = await finished(client, created.id, 300_000);

  expect(job.status).toBe('succeeded');
  expect(job.hyperparameters).toEqual({ n_epochs: 10, batch_size: 1, learning_rate_multiplier: 1, full: true });
  expect(job.fine_tuned_model).toBe(`ft:${TINY_MODEL_NAME}:personal:weather:${job.id.slice(6, 14)}`);

  const events = await allEvents(client, job.id);
  const ckpt = (step: number) => `Checkpoint created at step ${step} with Snapshot ID: ${job.fine_tuned_model}:ckpt-step-${step}`;
  expect(events.filter((e) => e.type === 'message').map((e) => e.message)).toEqual([
    `Created fine-tuning job: ${job.id}`,
    `Validating training file: ${file.id}`,
    'Files validated, moving job to queued state',
    'Fine-tuning job started',
    ...[10, 20, 30, 40, 50, 60, 70, 80, 90].map(ckpt),
    `New fine-tuned model created: ${job.fine_tuned_model}`,
    'The job has successfully completed',
  ]);
  expect(events.filter((e) => e.type === 'metrics')).toHaveLength(100);

  const checkpoints = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
  expect(checkpoints.map((c) => c.step_number)).toEqual([100, 90, 80]);
  expect(checkpoints[0]!.fine_tuned_model_checkpoint).toBe(job.fine_tuned_model);

  // The result file: one row per step, and the model learned the ten answers.
  const rows = (await (await client.files.content(job.result_files[0]!)).text()).trim().split('\n').slice(1).map((line) => line.split(','));
  expect(rows.map((row) => Number(row[0]))).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  const epochLoss = (epoch: number) => rows.slice(epoch * 10, epoch * 10 + 10).reduce((sum, row) => sum + Number(row[1]), 0) / 10;
  expect(epochLoss(0)).toBeGreaterThan(5);
  expect(epochLoss(9)).toBeLessThan(0.1);
  for (let epoch = 1; epoch < 10; epoch++) expect(epochLoss(epoch)).toBeLessThan(epochLoss(epoch - 1));

  const usage = await client.get<{ data: Array<Record<string, number | string>> }>('/usage');
  expect(usage.data).toEqual([expect.objectContaining({ training_jobs: 1, training_tokens: job.trained_tokens })]);
  // Every token of the file, ten times, as OpenAI counts trained tokens.
  const report = await client.get<{ token_counts: Record<string, { total: number }> }>(`/fine_tuning/jobs/${job.id}/validation_report`);
  expect(job.trained_tokens).toBe(10 * report.token_counts[TINY_MODEL_NAME]!.total);
});
