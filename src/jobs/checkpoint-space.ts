import fs from 'node:fs';
import path from 'node:path';

/** What a job's files take on disk, in bytes, by the model's shape: estimates, on the high side. */
export interface CheckpointSpace {
  /** The trained weights alone: a kept checkpoint once its optimizer state is dropped, or the fine-tuned model. */
  weights: number;
  /** One checkpoint as the engine writes it: the weights and the optimizer state to resume from. */
  checkpoint: number;
  /** The most the job holds at once: the kept checkpoints, the newest's optimizer state, one being written, and the model. */
  job: number;
}

/** AdamW keeps two fp32 moments per trained parameter. */
const OPTIMIZER_BYTES_PER_PARAMETER = 8;
/** Weights are saved as trained: fp32 at most. */
const WEIGHT_BYTES_PER_PARAMETER = 4;
const DTYPE_BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2 };

export interface ModelShape {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  torch_dtype?: string;
}

/**
 * The space the checkpoints of a job on `modelFolder` need. A full fine-tune trains every weight
 * (counted from the size of the model's safetensors files); LoRA trains rank-r pairs on every
 * linear layer of attention and MLP, the engine's default targets.
 */
export function checkpointSpace(
  modelFolder: string,
  training: { full: boolean; loraRank: number; nEpochs: number; keptCheckpoints: number },
): CheckpointSpace {
  const config = JSON.parse(fs.readFileSync(path.join(modelFolder, 'config.json'), 'utf8')) as ModelShape;
  const trained = training.full ? storedParameters(modelFolder, config) : loraParameters(config, training.loraRank);
  const weights = trained * WEIGHT_BYTES_PER_PARAMETER;
  const optimizer = trained * OPTIMIZER_BYTES_PER_PARAMETER;
  const kept = Math.min(training.nEpochs, training.keptCheckpoints);
  return { weights, checkpoint: weights + optimizer, job: kept * weights + optimizer + (weights + optimizer) + weights };
}

export function storedParameters(folder: string, config: ModelShape): number {
  const bytes = fs
    .readdirSync(folder)
    .filter((name) => name.endsWith('.safetensors'))
    .reduce((sum, name) => sum + fs.statSync(path.join(folder, name)).size, 0);
  return bytes / (DTYPE_BYTES[config.torch_dtype ?? 'float32'] ?? 4);
}

export function loraParameters(config: ModelShape, rank: number): number {
  const hidden = config.hidden_size;
  const headDim = config.head_dim ?? hidden / config.num_attention_heads;
  const query = config.num_attention_heads * headDim;
  const keyValue = (config.num_key_value_heads ?? config.num_attention_heads) * headDim;
  const mlp = config.intermediate_size;
  // A LoRA pair on a linear layer of `in` inputs and `out` outputs holds rank * (in + out) weights.
  const perLayer = [hidden + query, hidden + keyValue, hidden + keyValue, query + hidden, hidden + mlp, hidden + mlp, mlp + hidden];
  return config.num_hidden_layers * rank * perLayer.reduce((sum, n) => sum + n, 0);
}
