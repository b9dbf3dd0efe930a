/**
 * One stream through the HTTP API, llama.cpp against tunelab's engine, on the same fine-tune: a
 * LoRA fine-tune of random Qwen2.5-0.5B-shape weights (bench/engine/shapes.py, the Qwen3
 * tokenizer, `peakedQwenHome`), exported to a q8_0 GGUF, then served by each backend in turn as
 * config.json's `serving.models` chooses (a server restart each time, as a user switches). Each
 * round starts the server, warms the model up with one request, then streams the answers to the
 * ten trained questions one after another at temperature 0 (it was trained to answer them in a
 * sentence and stop) and takes the decode rate between each answer's first and last content
 * chunks, summed (and the whole requests' rate). The backends alternate, their order swapped each
 * round; the ratio is of the medians. The machine is shared, so figures are noisy: repeat.
 *
 *   npm run bench:serve-backends
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import type { ModelExport } from '../src/export/exports.js';
import { peakedQwenHome, startBenchServer, writeResult } from './support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const MAX_TOKENS = 64;
const QUANTIZATION = 'q8_0';
// llama.cpp's threads wait for each other spinning: on a shared machine busier than its cores one
// thread decodes faster than two (serving.threads in config.json; THREADS=2 to compare).
const THREADS = Number(process.env.THREADS ?? 1);
const BACKENDS = ['engine', 'llamacpp'] as const;
type Backend = (typeof BACKENDS)[number];
const QUESTIONS = fs
  .readFileSync(path.join(ROOT, 'examples/data/weather-jokes.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { messages: OpenAI.ChatCompletionMessageParam[] }).messages.slice(0, -1));

process.env.OMP_WAIT_POLICY = 'PASSIVE';
const { home, model } = await peakedQwenHome();

/** The fine-tune's q8_0 GGUF export, unless it has one. */
async function prepare(): Promise<void> {
  fs.rmSync(path.join(home, 'config.json'), { force: true });
  const server = await startBenchServer(['--slots', '0'], { home });
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
    const done = (await client.get<{ data: ModelExport[] }>('/exports')).data;
    if (done.some((e) => e.model === model && e.format === 'gguf' && e.quantization === QUANTIZATION && e.status === 'succeeded')) return;
    let exported = await client.post<ModelExport>('/exports', { body: { model, format: 'gguf', quantization: QUANTIZATION } });
    while (exported.status === 'queued' || exported.status === 'running') {
      await new Promise((resolve) => setTimeout(resolve, 500));
      exported = await client.get<ModelExport>(`/exports/${exported.id}`);
    }
    if (exported.status !== 'succeeded') throw new Error(`the q8_0 export failed: ${exported.error?.message}`);
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

async function measure(backend: Backend, round: number): Promise<Measure> {
  fs.writeFileSync(path.join(home, 'config.json'), JSON.stringify({ serving: { threads: THREADS, models: { [model]: { backend, quantization: QUANTIZATION } } } }));
  const server = await startBenchServer(['--slots', '0'], { home });
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
    const warm = await client.chat.completions.create({ model, messages: QUESTIONS[0]!, max_tokens: 8, temperature: 0 });
    const fingerprint = backend === 'engine' ? 'fp_tunelab' : `fp_tunelab_llamacpp_${QUANTIZATION}`;
    if (warm.system_fingerprint !== fingerprint) throw new Error(`expected ${fingerprint}, got ${warm.system_fingerprint}`);
    let tokens = 0;
    let decodeTokens = 0;
    let decodeMs = 0;
    let requestMs = 0;
    for (const messages of QUESTIONS) {
      const started = performance.now();
      const stream = await client.chat.completions.create({
        model,
        messages,
        max_tokens: MAX_TOKENS,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let first = 0;
      let last = 0;
      let chunks = 0;
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) {
          last = performance.now();
          first ||= last;
          chunks++;
        }
        if (chunk.usage) tokens += chunk.usage.completion_tokens;
      }
      requestMs += performance.now() - started;
      // Content chunks after the first, over the time to the last: chunks are whole characters, so a
      // token split inside one is not counted, for either backend alike.
      decodeTokens += chunks - 1;
      decodeMs += last - first;
    }
    return {
      backend,
      round,
      completion_tokens: tokens,
      decode_tokens_per_s: round1(decodeTokens / (decodeMs / 1000)),
      request_tokens_per_s: round1(tokens / (requestMs / 1000)),
      load_avg_1m: os.loadavg()[0]!,
    };
  } finally {
    await server.stop();
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

{
  await prepare();
  const runs: Measure[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? BACKENDS : [...BACKENDS].reverse();
    for (const backend of order) {
      const result = await measure(backend, round);
      console.log(JSON.stringify(result));
      runs.push(result);
    }
  }
  const of = (backend: Backend, key: 'decode_tokens_per_s' | 'request_tokens_per_s') => median(runs.filter((r) => r.backend === backend).map((r) => r[key]));
  writeResult(THREADS === 1 ? 'serve-backends' : `serve-backends-threads${THREADS}`, {
    command: 'npm run bench:serve-backends',
    model: 'LoRA fine-tune (10 epochs at 10x learning rate, weather) of random Qwen2.5-0.5B-shape bf16 weights',
    llamacpp: `q8_0 GGUF export, node-llama-cpp in the server process, ${THREADS} thread(s)`,
    engine: "this branch's engine serving the LoRA fine-tune over its bf16 base",
    max_tokens: MAX_TOKENS,
    questions: QUESTIONS.length,
    runs,
    median_decode_tokens_per_s: { engine: of('engine', 'decode_tokens_per_s'), llamacpp: of('llamacpp', 'decode_tokens_per_s') },
    median_request_tokens_per_s: { engine: of('engine', 'request_tokens_per_s'), llamacpp: of('llamacpp', 'request_tokens_per_s') },
    ratio_decode: round2(of('llamacpp', 'decode_tokens_per_s') / of('engine', 'decode_tokens_per_s')),
    ratio_request: round2(of('llamacpp', 'request_tokens_per_s') / of('engine', 'request_tokens_per_s')),
  });
}
