/**
 * A GGUF export as a user asks for it: a LoRA fine-tune of random Qwen2.5-0.5B-shape weights
 * (bf16, the Qwen3 tokenizer; made once under bench/results/tmp/) trained for one epoch on the
 * weather dataset, then `POST /v1/exports` (gguf, q8_0) timed from the request to `succeeded`,
 * with the time of each stage (merging, converting, checking with llama.cpp, archiving) taken
 * from the export object polled every 200 ms. Once, on a fresh home. Random weights answer with
 * near-ties that quantization breaks, so the check may fail the export; the stages up to the
 * failure are reported all the same.
 *
 *   npm run bench:export
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import type { ModelExport } from '../src/export/exports.js';
import { machine, shapeFolder, startBenchServer, writeResult } from './support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const QUANTIZATION = 'q8_0';

const server = await startBenchServer(['--slots', '1']);
try {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
  execFileSync(process.execPath, [CLI, 'setup-export', '--home', server.home], { stdio: 'inherit' });
  const qwen = shapeFolder('qwen2.5-0.5b');
  execFileSync(process.execPath, [CLI, 'models', 'add', qwen, '--name', 'bench-qwen2.5-0.5b', '--home', server.home], { stdio: 'ignore' });
  const file = await client.files.create({ file: fs.createReadStream(path.join(ROOT, 'examples/data/weather-jokes.jsonl')), purpose: 'fine-tune' });
  let job = await client.fineTuning.jobs.create({ model: 'bench-qwen2.5-0.5b', training_file: file.id, hyperparameters: { n_epochs: 1 } });
  while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    job = await client.fineTuning.jobs.retrieve(job.id);
  }
  if (job.status !== 'succeeded') throw new Error(`training ${job.id} ${job.status}`);

  const loadBefore = os.loadavg()[0];
  const started = performance.now();
  let exported = await client.post<ModelExport>('/exports', { body: { model: job.fine_tuned_model, format: 'gguf', quantization: QUANTIZATION } });
  const stages: Record<string, number> = {};
  let stage = 'queued';
  let stageAt = started;
  while (exported.status === 'queued' || exported.status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 200));
    exported = await client.get<ModelExport>(`/exports/${exported.id}`);
    const now = (exported.stage ?? exported.status).replace(/: \d+ of \d+ prompts$/, '');
    if (now !== stage) {
      stages[stage] = (stages[stage] ?? 0) + (performance.now() - stageAt) / 1000;
      stage = now;
      stageAt = performance.now();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  stages[stage] = (stages[stage] ?? 0) + (performance.now() - stageAt) / 1000;
  writeResult('export', {
    command: 'npm run bench:export',
    machine: machine(),
    load_avg_1m_before: loadBefore,
    load_avg_1m_after: os.loadavg()[0],
    model: 'LoRA fine-tune (1 epoch, weather) of random Qwen2.5-0.5B-shape bf16 weights',
    quantization: QUANTIZATION,
    status: exported.status,
    // Random weights meet near-ties a quantized file breaks, so the check may fail them: the
    // stage times up to then are still the export's.
    error: exported.error?.message ?? null,
    export_seconds: Math.round(seconds * 10) / 10,
    stage_seconds: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, Math.round(v * 10) / 10])),
    archive_bytes: exported.bytes,
    checked_prompts: exported.checks?.prompts.length,
    equal_token_share: exported.checks?.equal_token_share,
  });
} finally {
  await server.stop();
}
