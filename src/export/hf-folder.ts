import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { runEngineCommand } from '../engine/engine-command.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';

/** A fine-tune as an export starts from it. */
export interface ExportSource {
  id: string;
  /** The model folder the fine-tune runs on: its base's, or a full fine-tune's own. */
  weights: string;
  /** A LoRA fine-tune's adapter folder, null for a full fine-tune. */
  adapter: string | null;
  /** The base model's name on this server, and the folder it is registered as. */
  baseName: string;
  baseFolder: string;
}

/** What a Hugging Face model folder holds besides training state and tunelab's own files. */
const MODEL_FILES = [
  'config.json',
  'generation_config.json',
  'model.safetensors.index.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
];
/** A model folder's file: one of MODEL_FILES, or its weights (whole or sharded). */
const isModelFile = (name: string) => MODEL_FILES.includes(name) || /^model(-\d+-of-\d+)?\.safetensors$/.test(name);
const TOKENIZER_FILES = MODEL_FILES.filter((name) => name !== 'config.json' && !name.startsWith('model.') && name !== 'generation_config.json');
const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];

/** Copies the files `keep` names; `move` renames them instead (from a scratch folder on the same disk). */
async function copyFiles(from: string, to: string, keep: (name: string) => boolean, move = false): Promise<void> {
  await fsp.mkdir(to, { recursive: true });
  for (const name of await fsp.readdir(from)) {
    if (!keep(name)) continue;
    if (move) await fsp.rename(path.join(from, name), path.join(to, name));
    else await fsp.copyFile(path.join(from, name), path.join(to, name));
  }
}

/**
 * The Hugging Face hub id the base came from, when its folder is a snapshot of the hub's cache
 * (`.../models--Org--Name/snapshots/<revision>`, where `huggingface-cli download` puts it and
 * `tunelab models add` links it); null otherwise.
 */
export function hubId(baseFolder: string): string | null {
  let real: string;
  try {
    real = fs.realpathSync(baseFolder);
  } catch {
    return null;
  }
  const match = /(?:^|\/)models--([^/]+?)--([^/]+)\/snapshots\/[^/]+\/?$/.exec(real);
  return match ? `${match[1]}/${match[2]}` : null;
}

/**
 * `peft`: the adapter as PEFT and vLLM load it (`PeftModel.from_pretrained(base, folder)`), its
 * `base_model_name_or_path` the hub id when known, else the base's name here; the tokenizer
 * files ride along so the chat template travels with the adapter.
 */
export async function writePeftFolder(source: ExportSource, out: string): Promise<void> {
  if (!source.adapter) throw new Error(`${source.id} has no adapter`);
  await copyFiles(source.adapter, out, (name) => ADAPTER_FILES.includes(name));
  await copyFiles(source.weights, out, (name) => TOKENIZER_FILES.includes(name));
  const configPath = path.join(out, 'adapter_config.json');
  const config = JSON.parse(await fsp.readFile(configPath, 'utf8')) as Record<string, unknown>;
  config.base_model_name_or_path = hubId(source.baseFolder) ?? source.baseName;
  await fsp.writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * `merged`: one model folder transformers loads: a LoRA adapter folded into its base by the
 * engine's `merge` (in fp32, stored in the base's dtype), or a full fine-tune's own weights;
 * config, tokenizer files with the chat template, and a generation config whose
 * `eos_token_id` lists every end-of-turn id tunelab stops at.
 */
export async function writeMergedFolder(source: ExportSource, out: string, scratch: string): Promise<void> {
  let from = source.weights;
  if (source.adapter) {
    from = path.join(scratch, 'merged');
    const result = await runEngineCommand(['merge', '--base', source.weights, '--adapter', source.adapter, '--out', from]);
    const error = result.events.find((event) => event.type === 'error');
    if (result.code !== 0 || error) {
      throw new Error(`merging the adapter failed: ${String(error?.message ?? result.stderr.trim().split('\n').at(-1))}`);
    }
  }
  // The merge wrote its weights into scratch: they move rather than being written a second time.
  await copyFiles(from, out, isModelFile, source.adapter !== null);
  await nameArchitecture(out);
  await writeGenerationConfig(out);
}

/**
 * The base model as llama.cpp's converters read it (for a GGUF LoRA adapter and the base GGUF it
 * applies to): its weights and tokenizer linked rather than copied, its config with the
 * architecture named.
 */
export async function writeBaseFolder(source: ExportSource, out: string): Promise<void> {
  await fsp.mkdir(out, { recursive: true });
  for (const name of await fsp.readdir(source.baseFolder)) {
    if (isModelFile(name)) {
      if (name === 'config.json') await fsp.copyFile(path.join(source.baseFolder, name), path.join(out, name));
      else await fsp.symlink(path.join(source.baseFolder, name), path.join(out, name));
    }
  }
  await nameArchitecture(out);
}

/** The class transformers and llama.cpp's converter pick the model by, for each family tunelab trains. */
const ARCHITECTURES: Record<string, string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
};

/** A config written without `architectures` (tunelab reads `model_type`) gets its family's class. */
async function nameArchitecture(folder: string): Promise<void> {
  const file = path.join(folder, 'config.json');
  const config = JSON.parse(await fsp.readFile(file, 'utf8')) as { architectures?: unknown; model_type?: string };
  const architecture = ARCHITECTURES[config.model_type ?? ''];
  if (config.architectures || !architecture) return;
  await fsp.writeFile(file, `${JSON.stringify({ architectures: [architecture], ...config }, null, 2)}\n`);
}

async function writeGenerationConfig(folder: string): Promise<void> {
  const file = path.join(folder, 'generation_config.json');
  const config = fs.existsSync(file) ? (JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>) : {};
  const ends = ModelTokenizer.load(folder).endOfTurnIds;
  if (ends.length) config.eos_token_id = ends.length === 1 ? ends[0] : [...ends];
  await fsp.writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
}
