/**
 * Chat serving as a user sees it: the built server as its own process, streamed completions
 * through the official SDK, timed on the client. bench/engine/serve_bench.py measures the engine
 * alone over its pipes; the difference is what the server adds (tokenizing, detokenizing, SSE).
 *
 *   npm run bench:chat
 *
 * Models: the built-in tunelab-tiny (a small model, so the server's share shows), and random
 * weights of the Qwen2.5-0.5B shape in bf16 with the Qwen3 tokenizer (Qwen2.5's vocabulary),
 * made once under bench/results/tmp/. For each, after a warm-up request, with 128-token prompts
 * (token ids, so every run asks the same) and 128 new tokens (`stop` ids never sampled by chance
 * are left in, as a user's request would have them):
 * - time to first token: request sent to the first chunk with text (median of 3);
 * - one stream: decode tokens/s = (tokens - 1) / (last chunk - first chunk), median of 3;
 * - 8 streams at once: aggregate tokens/s = all tokens / (first request sent to last stream's
 *   end), prefills included; median of 3.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { shapeFolder, startBenchServer, writeResult } from './support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const PROMPT_TOKENS = 128;
const NEW_TOKENS = 128;
const REPEATS = 3;

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function prompt(seed: number, vocab: number): number[] {
  let state = seed + 1;
  return Array.from({ length: PROMPT_TOKENS }, () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return 100 + (state % (vocab - 1000));
  });
}

interface Stream {
  firstAt: number;
  lastAt: number;
  tokens: number;
}

async function stream(client: OpenAI, model: string, ids: number[]): Promise<Stream> {
  const chunks = await client.completions.create({
    model,
    prompt: ids,
    max_tokens: NEW_TOKENS,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let firstAt = 0;
  let lastAt = 0;
  let tokens = 0;
  for await (const chunk of chunks) {
    const now = performance.now();
    if (chunk.choices[0]?.text) {
      firstAt ||= now;
      lastAt = now;
    }
    if (chunk.usage) tokens = chunk.usage.completion_tokens;
  }
  return { firstAt, lastAt, tokens };
}

async function measure(client: OpenAI, model: string, vocab: number) {
  await stream(client, model, prompt(99, vocab));
  const ttft: number[] = [];
  const lengths: number[] = [];
  const single: number[] = [];
  const aggregate: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const sent = performance.now();
    const one = await stream(client, model, prompt(r, vocab));
    ttft.push((one.firstAt - sent) / 1000);
    lengths.push(one.tokens);
    single.push(((one.tokens - 1) * 1000) / (one.lastAt - one.firstAt));
    const start = performance.now();
    const eight = await Promise.all(Array.from({ length: 8 }, (_, i) => stream(client, model, prompt(10 + r * 8 + i, vocab))));
    const tokens = eight.reduce((sum, s) => sum + s.tokens, 0);
    aggregate.push((tokens * 1000) / (Math.max(...eight.map((s) => s.lastAt)) - start));
  }
  const result = {
    ttft_s: median(ttft),
    // Fewer than NEW_TOKENS when the model ends its answer by itself.
    tokens_per_stream: median(lengths),
    one_stream_tokens_per_s: median(single),
    eight_streams_aggregate_tokens_per_s: median(aggregate),
    load_avg_1m: os.loadavg()[0],
  };
  return { ...result, aggregate_over_one: result.eight_streams_aggregate_tokens_per_s / result.one_stream_tokens_per_s };
}

const server = await startBenchServer(['--slots', '0']);
try {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey });
  const qwen = shapeFolder('qwen2.5-0.5b');
  execFileSync(process.execPath, [CLI, 'models', 'add', qwen, '--name', 'bench-qwen2.5-0.5b', '--home', server.home], { stdio: 'ignore' });
  const results = {
    'tunelab-tiny': await measure(client, 'tunelab-tiny', 5460),
    'qwen2.5-0.5b (bf16 weights)': await measure(client, 'bench-qwen2.5-0.5b', 151_643),
  };
  writeResult('chat', { command: 'npm run bench:chat', prompt_tokens: PROMPT_TOKENS, new_tokens: NEW_TOKENS, results });
} finally {
  await server.stop();
}
