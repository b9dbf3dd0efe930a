import fs from 'node:fs';
import path from 'node:path';
import { invalidRequest } from '../errors.js';

export interface BaseModel {
  name: string;
  /** The model folder in Hugging Face layout. */
  path: string;
  /** Unix seconds when it was registered. */
  created: number;
}

/** The `model_type`s the engine implements. */
export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;

export const isSupportedModelType = (value: unknown) => (SUPPORTED_MODEL_TYPES as readonly unknown[]).includes(value);

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/**
 * Base models are the folders of `<home>/models/`, each in Hugging Face layout. The folder is
 * the registry: a model copied or linked there by hand is as registered as one added by
 * `tunelab models add`, and the server sees it without a restart.
 */
export class BaseModelRegistry {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  list(): BaseModel[] {
    return fs
      .readdirSync(this.dir)
      .filter((name) => MODEL_NAME.test(name))
      .sort()
      .map((name) => this.get(name))
      .filter((model): model is BaseModel => model !== undefined);
  }

  get(name: string): BaseModel | undefined {
    if (!MODEL_NAME.test(name)) return undefined;
    const folder = path.join(this.dir, name);
    try {
      // lstat: the registration time is when the link was made, not when the weights were downloaded.
      const registered = fs.lstatSync(folder);
      fs.statSync(path.join(folder, 'config.json'));
      return { name, path: folder, created: Math.floor(registered.mtimeMs / 1000) };
    } catch {
      return undefined;
    }
  }

  /** Registers a local model folder under `name` by linking it, so gigabytes of weights are not copied. */
  add(source: string, name: string): BaseModel {
    if (!MODEL_NAME.test(name)) {
      throw invalidRequest(`Model name "${name}" must be letters, digits, ".", "_" and "-" (at most 96).`, 'name');
    }
    if (this.get(name)) throw invalidRequest(`A base model named "${name}" is already registered.`, 'name');
    const folder = path.resolve(source);
    checkModelFolder(folder);
    fs.symlinkSync(folder, path.join(this.dir, name), 'dir');
    const model = this.get(name);
    if (!model) throw new Error(`Registered ${name} but cannot read it back from ${this.dir}`);
    return model;
  }

  /** Forgets a registration (the link), never the files it points to. */
  remove(name: string): void {
    const link = path.join(this.dir, name);
    if (MODEL_NAME.test(name) && fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.unlinkSync(link);
  }
}

/** A folder the engine can load: a supported config, a tokenizer, and weights in safetensors. */
export function checkModelFolder(folder: string): void {
  const where = (file: string) => path.join(folder, file);
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) throw invalidRequest(`${folder} is not a folder.`, 'path');
  let config: { model_type?: unknown };
  try {
    config = JSON.parse(fs.readFileSync(where('config.json'), 'utf8'));
  } catch (error) {
    throw invalidRequest(`${where('config.json')} cannot be read as JSON: ${(error as Error).message}`, 'path');
  }
  if (!isSupportedModelType(config.model_type)) {
    throw invalidRequest(
      `${where('config.json')} has model_type ${JSON.stringify(config.model_type)}; tunelab trains ${SUPPORTED_MODEL_TYPES.join(', ')}.`,
      'path',
    );
  }
  if (!fs.existsSync(where('tokenizer.json'))) {
    throw invalidRequest(`${folder} has no tokenizer.json (the Hugging Face fast tokenizer file).`, 'path');
  }
  if (!fs.existsSync(where('model.safetensors')) && !fs.existsSync(where('model.safetensors.index.json'))) {
    throw invalidRequest(`${folder} has no weights: neither model.safetensors nor model.safetensors.index.json.`, 'path');
  }
}

/** The longest sequence a model was built for (`max_position_embeddings`), or null when its config does not say. */
export function modelContextLength(folder: string): number | null {
  const config = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as { max_position_embeddings?: unknown };
  const length = config.max_position_embeddings;
  return typeof length === 'number' && Number.isInteger(length) && length > 0 ? length : null;
}
