/**
 * One stream through the HTTP API, llama.cpp against tunelab's engine, on the same fine-tune: a
 * LoRA fine-tune of random Qwen2.5-0.5B-shape weights (bench/engine/shapes.py, the Qwen3
 * tokenizer, `peakedQwenFineTune`), exported to a q8_0 GGUF, then served by each backend in turn
 * as config.json's `serving.models` chooses (a server restart each time, as a user switches).
 * Each round starts the server, warms the model up with one request, then streams one chat answer
 * of up to 128 tokens at temperature 0 and takes the decode rate between its first and last
 * content chunks (and the whole request's rate). The backends alternate, their order swapped each
 * round; the ratio is of the medians. The machine is shared, so figures are noisy: repeat.
 *
 *   npm run bench:serve-backends
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import type { ModelExport } from '../src/export/exports.js';
import { machine, peakedQwenFineTune, startBenchServer, writeResult } from './support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const MAX_TOKENS = 128;
const QUANTIZATION = 'q8_0';
// llama.cpp's threads wait for each other spinning: on a shared machine busier than its cores one
// thread decodes faster than two (serving.threads in config.json; THREADS=2 to compare).
const THREADS = Number(process.env.THREADS ?? 1);
const BACKENDS = ['engine', 'llamacpp'] as const;
type Backend = (typeof BACKENDS)[number];
// A question it was not trained on, so that it talks on rather than stopping after a trained answer.
const PROMPT = [{ role: 'user' as const, content: 'Tell me a long story about a lighthouse keeper and the sea.' }];

process.env.OMP_WAIT_POLICY = 'PASSIVE';
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-bench-'));

/** The fine-tune and its q8_0 GGUF export, made once on the home. */
async function prepare(): Promise<string> {
  const server = await startBenchServer(['--slots', '1'], { home });
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
    execFileSync(process.execPath, [CLI, 'setup', '--export', '--home', home], { stdio: 'inherit' });
    const model = await peakedQwenFineTune(server, client);
    let exported = await client.post<ModelExport>('/exports', { body: { model, format: 'gguf', quantization: QUANTIZATION } });
    while (exported.status === 'queued' || exported.status === 'running') {
      await new Promise((resolve) => setTimeout(resolve, 500));
      exported = await client.get<ModelExport>(`/exports/${exported.id}`);
    }
    if (exported.status !== 'succeeded') throw new Error(`the q8_0 export failed: ${exported.error?.message}`);
    return model;
  } finally {
    await server.stop();
  }
}

interface Measure {
  backend: Backend;
  round: number;
  completion_tokens: number;
  decode_tokens_per_s: number;
  request_tokens_per_s: number;
  load_avg_1m: number;
}

async function measure(model: string, backend: Backend, round: number): Promise<Measure> {
  fs.writeFileSync(path.join(home, 'config.json'), JSON.stringify({ serving: { threads: THREADS, models: { [model]: { backend, quantization: QUANTIZATION } } } }));
  const server = await startBenchServer(['--slots', '0'], { home });
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
    const warm = await client.chat.completions.create({ model, messages: PROMPT, max_tokens: 8, temperature: 0 });
    const fingerprint = backend === 'engine' ? 'fp_tunelab' : `fp_tunelab_llamacpp_${QUANTIZATION}`;
    if (warm.system_fingerprint !== fingerprint) throw new Error(`expected ${fingerprint}, got ${warm.system_fingerprint}`);
    const started = performance.now();
    const stream = await client.chat.completions.create({
      model,
      messages: PROMPT,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let first = 0;
    let last = 0;
    let tokens = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) {
        last = performance.now();
        first ||= last;
      }
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
    const ended = performance.now();
    if (tokens < MAX_TOKENS / 2) throw new Error(`${backend} answered only ${tokens} tokens`);
    return {
      backend,
      round,
      completion_tokens: tokens,
      // The tokens after the first one's chunk, over the time to the last.
      decode_tokens_per_s: round1((tokens - 1) / ((last - first) / 1000)),
      request_tokens_per_s: round1(tokens / ((ended - started) / 1000)),
      load_avg_1m: os.loadavg()[0]!,
    };
  } finally {
    await server.stop();
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  const loadBefore = os.loadavg()[0];
  const model = await prepare();
  const runs: Measure[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? BACKENDS : [...BACKENDS].reverse();
    for (const backend of order) {
      const result = await measure(model, backend, round);
      console.log(JSON.stringify(result));
      runs.push(result);
    }
  }
  const of = (backend: Backend, key: 'decode_tokens_per_s' | 'request_tokens_per_s') => median(runs.filter((r) => r.backend === backend).map((r) => r[key]));
  writeResult('serve-backends', {
    command: 'npm run bench:serve-backends',
    machine: machine(),
    load_avg_1m_before: loadBefore,
    load_avg_1m_after: os.loadavg()[0],
    model: 'LoRA fine-tune (10 epochs at 10x learning rate, weather) of random Qwen2.5-0.5B-shape bf16 weights',
    llamacpp: `q8_0 GGUF export, node-llama-cpp in the server process, ${THREADS} thread(s)`,
    engine: "this branch's engine serving the LoRA fine-tune over its bf16 base",
    max_tokens: MAX_TOKENS,
    runs,
    median_decode_tokens_per_s: { engine: of('engine', 'decode_tokens_per_s'), llamacpp: of('llamacpp', 'decode_tokens_per_s') },
    median_request_tokens_per_s: { engine: of('engine', 'request_tokens_per_s'), llamacpp: of('llamacpp', 'request_tokens_per_s') },
    ratio_decode: round2(of('llamacpp', 'decode_tokens_per_s') / of('engine', 'decode_tokens_per_s')),
    ratio_request: round2(of('llamacpp', 'request_tokens_per_s') / of('engine', 'request_tokens_per_s')),
  });
} finally {
  fs.rmSync(home, { recursive: true, force: true });
}
