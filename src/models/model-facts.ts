import fs from 'node:fs';
import path from 'node:path';
import { modelContextLength } from './base-models.js';

/** What a model folder's files say about it, read without loading the weights. */
export interface ModelFacts {
  modelType: string;
  /** `max_position_embeddings`, or null when the config does not say. */
  contextLength: number | null;
  /** Counted from the safetensors headers. */
  parameters: number;
  /** How the weights are stored (`bfloat16`, `float32`, ...). */
  dtype: string;
  weightBytes: number;
  /** Bytes each use needs, estimated below; see `memoryNeeds`. */
  memory: MemoryNeeds;
}

export interface MemoryNeeds {
  /** Weights in their dtype and the KV cache of one sequence at the full context. */
  serve: number;
  /** Weights frozen in bf16, LoRA's own parameters and their optimizer state, activations of one 1024-token sequence. */
  trainLora: number;
  /** fp32 weights, gradients and AdamW's two moments (16 bytes a parameter), activations of one 1024-token sequence. */
  trainFull: number;
}

const DTYPE_NAMES: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };
/** The sequence the training estimates are made for. */
const TRAINING_TOKENS = 1024;
/** Elements of logits the engine's loss holds at once (CHUNK_ELEMENTS in engine/tunelab_engine/loss.py). */
const LOGITS_CHUNK = 1 << 24;

interface Config {
  model_type?: string;
  max_position_embeddings?: number;
  hidden_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number;
  head_dim?: number;
  intermediate_size?: number;
  vocab_size?: number;
  torch_dtype?: string;
  dtype?: string;
}

export function readModelFacts(folder: string): ModelFacts {
  const config = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as Config;
  const tensors = safetensorsFiles(folder).flatMap((file) => Object.entries(readSafetensorsHeader(file)));
  let parameters = 0;
  let weightBytes = 0;
  const byDtype = new Map<string, number>();
  for (const [name, tensor] of tensors) {
    if (name === '__metadata__') continue;
    const count = tensor.shape.reduce((product, n) => product * n, 1);
    parameters += count;
    weightBytes += tensor.data_offsets[1] - tensor.data_offsets[0];
    byDtype.set(tensor.dtype, (byDtype.get(tensor.dtype) ?? 0) + count);
  }
  const stored = [...byDtype].sort((a, b) => b[1] - a[1])[0]?.[0];
  const dtype = config.torch_dtype ?? config.dtype ?? (stored ? (DTYPE_NAMES[stored] ?? stored.toLowerCase()) : 'unknown');
  const contextLength = modelContextLength(folder);
  return { modelType: String(config.model_type), contextLength, parameters, dtype, weightBytes, memory: memoryNeeds(config, parameters, weightBytes, contextLength) };
}

/**
 * Rough needs, for telling a user whether a model fits before a job fails: the terms that grow
 * with the model (weights, optimizer state, KV cache, activations) and none of the framework's
 * fixed overhead. Activations count 34 bytes per token, layer and hidden unit (a transformer
 * layer's saved tensors in 16 bits, without recomputation) plus one chunk of fp32 logits: the
 * engine's loss computes them 2^24 elements at a time (engine/tunelab_engine/loss.py).
 */
export function memoryNeeds(config: Config, parameters: number, weightBytes: number, contextLength: number | null): MemoryNeeds {
  const hidden = config.hidden_size ?? 0;
  const layers = config.num_hidden_layers ?? 0;
  const heads = config.num_attention_heads ?? 1;
  const kvHeads = config.num_key_value_heads ?? heads;
  const headDim = config.head_dim ?? Math.floor(hidden / heads);
  const bytesPerWeight = parameters > 0 ? weightBytes / parameters : 2;
  const kvCache = 2 * layers * kvHeads * headDim * bytesPerWeight * (contextLength ?? TRAINING_TOKENS);
  const activations = TRAINING_TOKENS * 34 * layers * hidden + 4 * Math.min(TRAINING_TOKENS * (config.vocab_size ?? 0), LOGITS_CHUNK);
  // LoRA of rank 16 on the attention and MLP projections: 2·r·(in+out) per projection.
  const loraParameters = layers * 2 * 16 * (4 * 2 * hidden + 3 * (hidden + (config.intermediate_size ?? 4 * hidden)));
  return {
    serve: Math.round(weightBytes + kvCache),
    trainLora: Math.round(parameters * 2 + loraParameters * 16 + activations),
    trainFull: Math.round(parameters * 16 + activations),
  };
}

function safetensorsFiles(folder: string): string[] {
  return (indexedShards(folder) ?? ['model.safetensors']).map((file) => path.join(folder, file));
}

/** The shard files `model.safetensors.index.json` names, sorted; null when the folder has no index. */
export function indexedShards(folder: string): string[] | null {
  const index = path.join(folder, 'model.safetensors.index.json');
  if (!fs.existsSync(index)) return null;
  const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
  return [...new Set(Object.values(map))].sort();
}

interface TensorHeader {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The JSON header at the start of a safetensors file: 8 bytes of length, then the header. */
function readSafetensorsHeader(file: string): Record<string, TensorHeader> {
  const fd = fs.openSync(file, 'r');
  try {
    const length = Buffer.alloc(8);
    fs.readSync(fd, length, 0, 8, 0);
    const size = Number(length.readBigUInt64LE());
    if (size > 100_000_000) throw new Error(`${file} is not a safetensors file (header of ${size} bytes)`);
    const header = Buffer.alloc(size);
    fs.readSync(fd, header, 0, size, 8);
    return JSON.parse(header.toString('utf8')) as Record<string, TensorHeader>;
  } finally {
    fs.closeSync(fd);
  }
}

