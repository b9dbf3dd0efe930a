/**
 * llama.cpp (through node-llama-cpp, CPU) as serve_bench.py's baseline: loads a GGUF and answers
 * JSON lines on stdin, each {"prompts": [[token ids], ...], "new_tokens": n}, by decoding every
 * prompt greedily in its own sequence of one context, all at once (llama.cpp batches the
 * sequences' tokens into one evaluation), and writing one line back:
 * {"sent": t, "arrivals": [[t, ...] per prompt]}, seconds on this process's clock. It prints
 * {"type": "ready", ...} once the model is loaded.
 *
 *     npx tsx bench/engine/llama-cpp-streams.ts --model file.gguf --threads 2 --sequences 8
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { getLlama, type LlamaContextSequence, type Token } from 'node-llama-cpp';

const { values } = parseArgs({
  options: { model: { type: 'string' }, threads: { type: 'string', default: '1' }, sequences: { type: 'string', default: '8' } },
});
if (!values.model) throw new Error('--model is required');
const threads = Number(values.threads);
const sequences = Number(values.sequences);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never, maxThreads: threads });
const model = await llama.loadModel({ modelPath: values.model });
// 512 positions a sequence: the benchmark's prompt and answer fit in that.
const context = await model.createContext({ contextSize: 512 * sequences, sequences, threads });
const slots: LlamaContextSequence[] = Array.from({ length: sequences }, () => context.getSequence());
const now = () => performance.now() / 1000;
console.log(JSON.stringify({ type: 'ready', threads, sequences, llama_cpp: llama.llamaCppRelease, gpu: llama.gpu }));

async function decode(sequence: LlamaContextSequence, prompt: number[], newTokens: number): Promise<number[]> {
  await sequence.clearHistory();
  const arrivals: number[] = [];
  for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0 })) {
    void token;
    arrivals.push(now());
    if (arrivals.length >= newTokens) break;
  }
  return arrivals;
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const request = JSON.parse(line) as { prompts: number[][]; new_tokens: number };
  if (request.prompts.length > slots.length) throw new Error(`${request.prompts.length} prompts, ${slots.length} sequences`);
  const sent = now();
  const arrivals = await Promise.all(request.prompts.map((prompt, i) => decode(slots[i]!, prompt, request.new_tokens)));
  console.log(JSON.stringify({ sent, arrivals }));
}
await context.dispose();
await model.dispose();
