import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { DATASETS, type TestServer, startTestServer } from './support/server.js';

const run = promisify(execFile);
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
}, 120_000);
afterAll(() => t.cleanup());

it("runs the guide's calls through the current openai Python SDK: upload, jobs, events, cancel, checkpoints, chat, completions, delete", { timeout: 300_000 }, async () => {
  const { stdout } = await run(
    process.env.TUNELAB_PYTHON!,
    [path.join(import.meta.dirname, 'python/guide_calls.py'), path.join(DATASETS, 'weather-jokes.jsonl'), TINY_MODEL_NAME],
    { env: { ...process.env, OPENAI_BASE_URL: t.server.baseURL, OPENAI_API_KEY: t.apiKey }, timeout: 280_000 },
  );
  const seen = JSON.parse(stdout);
  expect(seen.files.map((f: { filename: string; status: string }) => [f.filename, f.status])).toEqual([
    ['weather-jokes.jsonl', 'processed'],
    ['upload', 'processed'],
  ]);
  expect(seen.cancelled).toBe('cancelled');
  expect(seen.listed).toHaveLength(2);
  expect(seen.job).toMatchObject({ status: 'succeeded', hyperparameters: { n_epochs: 2 }, trained_tokens: expect.any(Number) });
  const model: string = seen.job.fine_tuned_model;
  expect(model).toMatch(new RegExp(`^ft:${TINY_MODEL_NAME}:personal:py:`));
  expect(seen.events).toContain(`New fine-tuned model created: ${model}`);
  expect(seen.checkpoints).toEqual([20, 10]);
  expect(seen.chat).toMatchObject({ object: 'chat.completion', model, choices: [{ index: 0, message: { role: 'assistant' } }] });
  expect(seen.chat.usage.completion_tokens).toBeGreaterThan(0);
  // Greedy: the stream says what the plain call said.
  expect(seen.streamed).toBe(seen.chat.choices[0].message.content);
  expect(seen.streamed_usage).toMatchObject({ prompt_tokens: seen.chat.usage.prompt_tokens, completion_tokens: seen.chat.usage.completion_tokens });
  expect(seen.completion).toMatchObject({ object: 'text_completion', model, choices: [{ index: 0, text: expect.any(String) }] });
  expect(seen.deleted).toEqual({ id: model, object: 'model', deleted: true });
  expect(seen.models_after).not.toContain(model);
  expect(seen.models_after).toContain(TINY_MODEL_NAME);
});
