/**
 * What the server adds per token on the llama.cpp path, without HTTP: one stream of greedy decode
 * on the q8_0 GGUF export of the peaked Qwen2.5-0.5B-shape fine-tune (`npm run
 * bench:serve-backends` makes and unpacks it), by node-llama-cpp alone (a context of one sequence,
 * `evaluate`), through tunelab's `LlamaCppBackend` (its context of `maxBatch` sequences,
 * `evaluateWithMetadata`, stop ids, leases), and through the backend and `Generation` (tokens to
 * text with stop strings, as a chat completion streams them). Alternated, ROUNDS rounds; decode
 * tokens/s from the first token to the last, medians and their ratios to node-llama-cpp alone.
 *
 *   npm run build && OMP_WAIT_POLICY=PASSIVE npx tsx bench/llamacpp-overhead.ts
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Token } from 'node-llama-cpp';
import { Generation } from '../src/inference/generation.js';
import { llamaRuntime } from '../src/inference/llama-runtime.js';
import { LlamaCppBackend } from '../src/inference/llamacpp-backend.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { writeResult } from './support.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const HOME = path.join(ROOT, 'bench/results/tmp/peaked-qwen-home');
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const TOKENS = 64;
const THREADS = Number(process.env.THREADS ?? 1);

const unpacked = fs.existsSync(path.join(HOME, 'exports')) ? fs.readdirSync(path.join(HOME, 'exports')).find((name) => name.endsWith('.gguf')) : undefined;
if (!unpacked) throw new Error(`no unpacked GGUF export in ${HOME}/exports: run npm run bench:serve-backends first`);
const gguf = path.join(HOME, 'exports', unpacked);
const tokenizer = ModelTokenizer.load(path.join(ROOT, 'bench/results/tmp/qwen2.5-0.5b'));
// A prompt the fine-tune does not answer in one sentence, so that every side decodes TOKENS tokens.
const prompt = tokenizer.encode('Tell me a long story about the weather in Beijing, with many details:');

const llama = await llamaRuntime();
const model = await llama.loadModel({ modelPath: gguf });
const backend = new LlamaCppBackend({ maxBatch: 8, idleMs: 600_000, threads: THREADS, maxModels: 1 });
const request = {
  inputIds: prompt,
  maxTokens: TOKENS,
  temperature: 0,
  topP: 1,
  seed: null,
  stopIds: [],
  presencePenalty: 0,
  frequencyPenalty: 0,
  constraint: null,
  logprobs: null,
};

/** Tokens/s from the first token to the last; `run` may return the count of tokens where its ticks are not tokens. */
async function rate(run: (tick: () => void) => Promise<number | void>): Promise<number> {
  let first = 0;
  let count = 0;
  const tokens = await run(() => {
    count++;
    first ||= performance.now();
  });
  return ((tokens ?? count) - 1) / ((performance.now() - first) / 1000);
}

const sides = {
  node_llama_cpp: () =>
    rate(async (tick) => {
      const context = await model.createContext({ contextSize: 2048, sequences: 1, threads: THREADS });
      let n = 0;
      for await (const token of context.getSequence().evaluate(prompt as Token[], { temperature: 0 })) {
        void token;
        tick();
        if (++n >= TOKENS) break;
      }
      await context.dispose();
    }),
  backend: () =>
    rate(async (tick) => {
      const lease = await backend.acquire(gguf);
      for await (const update of lease.generator.generate(request)) if (update.type === 'tokens') tick();
      lease.release();
    }),
  backend_and_generation: () =>
    rate(async (tick) => {
      const lease = await backend.acquire(gguf);
      const generation = new Generation(lease.generator, tokenizer, [{ index: 0, tokens: request }], ['never said'], undefined);
      for await (const event of generation.events()) if (event.text) tick();
      lease.release();
      return generation.completionTokens;
    }),
};
type Side = keyof typeof sides;

await sides.backend(); // loads the backend's context once, outside the rounds
const runs: Array<Record<Side, number> & { round: number; load_avg_1m: number }> = [];
for (let round = 1; round <= ROUNDS; round++) {
  const names = Object.keys(sides) as Side[];
  const order = round % 2 ? names : names.reverse();
  const result = { round } as Record<Side, number> & { round: number; load_avg_1m: number };
  for (const side of order) result[side] = Math.round((await sides[side]()) * 10) / 10;
  result.load_avg_1m = os.loadavg()[0]!;
  console.log(JSON.stringify(result));
  runs.push(result);
}
await backend.close();
await model.dispose();

const median = (side: Side) => [...runs.map((r) => r[side])].sort((a, b) => a - b)[Math.floor(runs.length / 2)]!;
writeResult('llamacpp-overhead', {
  command: 'npm run build && OMP_WAIT_POLICY=PASSIVE npx tsx bench/llamacpp-overhead.ts',
  gguf: 'q8_0 export of the peaked Qwen2.5-0.5B-shape LoRA fine-tune',
  threads: THREADS,
  tokens: TOKENS,
  runs,
  median_decode_tokens_per_s: { node_llama_cpp: median('node_llama_cpp'), backend: median('backend'), backend_and_generation: median('backend_and_generation') },
  ratio_to_node_llama_cpp: {
    backend: Math.round((median('backend') / median('node_llama_cpp')) * 100) / 100,
    backend_and_generation: Math.round((median('backend_and_generation') / median('node_llama_cpp')) * 100) / 100,
  },
});
