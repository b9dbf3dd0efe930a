/**
 * A GGUF export as a user asks for it: a LoRA fine-tune of random Qwen2.5-0.5B-shape weights
 * (bf16, the Qwen3 tokenizer; made once under bench/results/tmp/) trained until its answers are
 * peaked (`peakedQwenHome`, made once), then `POST /v1/exports` (gguf, q8_0) timed from the request to
 * `succeeded`, with the time of each stage (merging, converting, checking with llama.cpp,
 * archiving) taken from the export object polled every 200 ms. Once; a failed check is reported
 * with the stages up to the failure.
 *
 *   npm run bench:export
 */
import OpenAI from 'openai';
import type { ModelExport } from '../src/export/exports.js';
import { peakedQwenHome, startBenchServer, writeResult } from './support.js';

const QUANTIZATION = 'q8_0';

const { home, model } = await peakedQwenHome();
const server = await startBenchServer(['--slots', '0'], { home });
try {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });

  const started = performance.now();
  let exported = await client.post<ModelExport>('/exports', { body: { model, format: 'gguf', quantization: QUANTIZATION } });
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
    model: 'LoRA fine-tune (10 epochs at 10x learning rate, weather) of random Qwen2.5-0.5B-shape bf16 weights',
    quantization: QUANTIZATION,
    status: exported.status,
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
