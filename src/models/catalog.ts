import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TrainingArraysWriter } from '../datasets/training-arrays.js';
import { runEngineCommand } from '../engine/engine-command.js';
import { readModelFacts } from './model-facts.js';

/** A model we recommend: its hub id, its size, and the licence a user accepts by pulling it. */
export interface CatalogEntry {
  repo: string;
  family: string;
  parameters: number;
  /** Bytes of its safetensors on the hub. */
  downloadBytes: number;
  licence: string;
  /** Gated on the hub: its licence is accepted on the model's page and HF_TOKEN set. */
  gated: boolean;
}

/** Parameter counts and download sizes as the hub lists them for these repositories' main branch. */
export const CATALOG: readonly CatalogEntry[] = [
  { repo: 'HuggingFaceTB/SmolLM2-135M-Instruct', family: 'llama', parameters: 134.5e6, downloadBytes: 0.27e9, licence: 'apache-2.0', gated: false },
  { repo: 'HuggingFaceTB/SmolLM2-360M-Instruct', family: 'llama', parameters: 361.8e6, downloadBytes: 0.72e9, licence: 'apache-2.0', gated: false },
  { repo: 'HuggingFaceTB/SmolLM2-1.7B-Instruct', family: 'llama', parameters: 1.71e9, downloadBytes: 3.42e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen2.5-0.5B-Instruct', family: 'qwen2', parameters: 494e6, downloadBytes: 0.99e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen2.5-1.5B-Instruct', family: 'qwen2', parameters: 1.54e9, downloadBytes: 3.09e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen2.5-7B-Instruct', family: 'qwen2', parameters: 7.62e9, downloadBytes: 15.2e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen3-0.6B', family: 'qwen3', parameters: 596e6, downloadBytes: 1.5e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen3-1.7B', family: 'qwen3', parameters: 2.03e9, downloadBytes: 4.06e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen3-4B', family: 'qwen3', parameters: 4.02e9, downloadBytes: 8.05e9, licence: 'apache-2.0', gated: false },
  { repo: 'Qwen/Qwen3-8B', family: 'qwen3', parameters: 8.19e9, downloadBytes: 16.4e9, licence: 'apache-2.0', gated: false },
  { repo: 'meta-llama/Llama-3.2-1B-Instruct', family: 'llama', parameters: 1.24e9, downloadBytes: 2.47e9, licence: 'llama3.2', gated: true },
  { repo: 'meta-llama/Llama-3.2-3B-Instruct', family: 'llama', parameters: 3.21e9, downloadBytes: 6.43e9, licence: 'llama3.2', gated: true },
  { repo: 'meta-llama/Llama-3.1-8B-Instruct', family: 'llama', parameters: 8.03e9, downloadBytes: 16.1e9, licence: 'llama3.1', gated: true },
  { repo: 'mistralai/Mistral-7B-Instruct-v0.3', family: 'mistral', parameters: 7.25e9, downloadBytes: 14.5e9, licence: 'apache-2.0', gated: true },
];

/** The engine's LoRA training speed on this host, measured once on a model of a real shape. */
export interface Throughput {
  tokensPerSecond: number;
  parameters: number;
  shape: string;
  measuredAt: number;
  cpu: string;
  cores: number;
}

/**
 * Seconds this host takes to train 1,000 tokens with LoRA: the measured rate, scaled by
 * parameters (a step's work is proportional to them, so a model ten times larger takes ten times
 * as long per token). Only as good as that proportion: small models spend relatively more
 * outside the matrix products, so the estimate leans long for them.
 */
export const secondsPer1kTokens = (throughput: Throughput, parameters: number) =>
  (1000 / throughput.tokensPerSecond) * (parameters / throughput.parameters);

/** How long LoRA training on `tokens` (all tokens of all epochs) would take on this host, or null before a measurement. */
export function estimateTrainingSeconds(home: string, parameters: number, tokens: number): { seconds: number; throughput: Throughput } | null {
  const throughput = readThroughput(home);
  return throughput && { seconds: (secondsPer1kTokens(throughput, parameters) * tokens) / 1000, throughput };
}

/** For the file report: seconds of LoRA training on `tokens` for the model in `folder`, or null (not measured, weights unreadable). */
export const trainingTimeEstimator = (home: string) => (folder: string, tokens: number): number | null => {
  try {
    const estimate = estimateTrainingSeconds(home, readModelFacts(folder).parameters, tokens);
    return estimate && Math.round(estimate.seconds);
  } catch {
    return null;
  }
};

/** SmolLM2-135M's shape, with random weights: big enough for the matrix products to dominate, small enough for a minute's measurement. */
const MEASURED_SHAPE = {
  name: 'smollm2-135m',
  config: {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 49152, hidden_size: 576, intermediate_size: 1536,
    num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, rms_norm_eps: 1e-5, rope_theta: 100000.0,
    max_position_embeddings: 8192, tie_word_embeddings: true, torch_dtype: 'bfloat16',
  },
};
const SEQUENCE = 256;
const BATCH = 4;
const STEPS = 5;

export const throughputFile = (home: string) => path.join(home, 'engine-throughput.json');

export function readThroughput(home: string): Throughput | null {
  try {
    return JSON.parse(fs.readFileSync(throughputFile(home), 'utf8')) as Throughput;
  } catch {
    return null;
  }
}

/** Trains the measured shape for a few LoRA steps through the engine and keeps the median rate after the first step. */
export async function measureThroughput(home: string): Promise<Throughput> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-throughput-'));
  try {
    const model = path.join(dir, 'model');
    fs.mkdirSync(model);
    fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify(MEASURED_SHAPE.config));
    const init = await runEngineCommand(['init', '--config', model, '--out', model, '--dtype', 'bfloat16']);
    if (init.code !== 0) throw new Error(`engine init failed: ${init.stderr.trim().split('\n').at(-1)}`);
    const parameters = Number(init.events.find((event) => event.type === 'done')?.parameters);

    const arrays = await TrainingArraysWriter.create(path.join(dir, 'train'));
    let seed = 1;
    const next = () => (seed = (seed * 48271) % 2147483647);
    for (let example = 0; example < BATCH * STEPS; example++) {
      const ids = Array.from({ length: SEQUENCE }, () => next() % MEASURED_SHAPE.config.vocab_size);
      await arrays.add(ids, ids.map((_, i) => (i >= SEQUENCE / 2 ? 1 : 0)));
    }
    await arrays.finish();
    const spec = {
      model, base_model_name: MEASURED_SHAPE.name, train_data: path.join(dir, 'train'), valid_data: null,
      output_dir: path.join(dir, 'out'), work_dir: path.join(dir, 'work'), method: 'lora', n_epochs: 1,
      batch_size: BATCH, learning_rate: 1e-4, seq_len: SEQUENCE,
    };
    fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify(spec));
    const train = await runEngineCommand(['train', '--spec', path.join(dir, 'spec.json')]);
    const rates = train.events.filter((event) => event.type === 'step').slice(1).map((event) => Number(event.tokens_per_second)).sort((a, b) => a - b);
    if (train.code !== 0 || rates.length === 0) throw new Error(`engine train failed: ${train.stderr.trim().split('\n').at(-1)}`);
    const throughput: Throughput = {
      tokensPerSecond: rates[Math.floor(rates.length / 2)]!,
      parameters,
      shape: MEASURED_SHAPE.name,
      measuredAt: Math.floor(Date.now() / 1000),
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.availableParallelism(),
    };
    fs.mkdirSync(home, { recursive: true });
    fs.writeFileSync(throughputFile(home), JSON.stringify(throughput, null, 2));
    return throughput;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
