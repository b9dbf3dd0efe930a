import { readHomeConfig } from '../config.js';
import { DEFAULT_SERVE_POOL, type ServePoolOptions } from '../engine/serve-pool.js';
import { GGUF_QUANTIZATIONS } from '../export/exports.js';

/** Which backend answers a model: `auto` is llama.cpp where the model has a GGUF export, the engine elsewhere. */
export type BackendSetting = { backend: 'engine' | 'llamacpp' | 'auto'; quantization: string | null };

export interface BackendSettings extends BackendSetting {
  /** Per model id, over the default. */
  models: Record<string, BackendSetting>;
  /** llama.cpp's threads per model; null: the host's math cores. */
  threads: number | null;
}

export type ServingSettings = Omit<ServePoolOptions, 'logDir'> & { backends: BackendSettings };

const FIELDS = {
  idle_seconds: ['idleMs', 1000],
  load_timeout_seconds: ['loadTimeoutMs', 1000],
  max_batch: ['maxBatch', 1],
  max_adapters: ['maxAdapters', 1],
  max_models: ['maxModels', 1],
} as const;
const BACKEND_FIELDS = ['backend', 'quantization', 'threads', 'models'];
const BACKENDS = ['engine', 'llamacpp', 'auto'];

/**
 * The `serving` section of `<home>/config.json`: `{"serving": {"idle_seconds": 600,
 * "load_timeout_seconds": 300, "max_batch": 16, "max_adapters": 8, "max_models": 4,
 * "backend": "engine", "quantization": "q8_0", "threads": 2, "models": {"ft:...": {"backend":
 * "llamacpp", "quantization": "q8_0"}}}}`, each optional; `defaultBackend` where it names no
 * backend. A section that is there but wrong is an error naming the field.
 */
export function loadServingSettings(home: string, defaultBackend: BackendSetting['backend'] = 'engine'): ServingSettings {
  const defaults = { ...DEFAULT_SERVE_POOL, backends: { backend: defaultBackend, quantization: null, models: {}, threads: null } };
  return readHomeConfig(home, (config) => parseServing(config.serving, defaults), defaults);
}

function parseServing(section: unknown, defaults: ServingSettings): ServingSettings {
  if (section === undefined || section === null) return defaults;
  if (typeof section !== 'object' || Array.isArray(section)) throw new Error('serving must be an object');
  const settings: ServingSettings = { ...defaults, backends: { ...defaults.backends } };
  for (const [key, value] of Object.entries(section)) {
    if (BACKEND_FIELDS.includes(key)) continue;
    if (!(key in FIELDS)) throw new Error(`serving.${key} is not a serving setting (${[...Object.keys(FIELDS), ...BACKEND_FIELDS].join(', ')})`);
    const [field, scale] = FIELDS[key as keyof typeof FIELDS];
    if (!isCount(value)) throw new Error(`serving.${key} must be a whole number of at least 1`);
    settings[field] = value * scale;
  }
  const fields = section as Record<string, unknown>;
  Object.assign(settings.backends, backendSetting(fields, 'serving', settings.backends));
  if (fields.threads !== undefined) {
    if (!isCount(fields.threads)) throw new Error('serving.threads must be a whole number of at least 1');
    settings.backends.threads = fields.threads;
  }
  if (fields.models !== undefined) {
    if (!isObject(fields.models)) throw new Error('serving.models must be an object keyed by model id');
    for (const [model, value] of Object.entries(fields.models)) {
      const where = `serving.models[${JSON.stringify(model)}]`;
      if (!isObject(value)) throw new Error(`${where} must be an object`);
      for (const key of Object.keys(value)) if (key !== 'backend' && key !== 'quantization') throw new Error(`${where}.${key} is not a model's serving setting (backend, quantization)`);
      settings.backends.models[model] = backendSetting(value, where, { backend: 'engine', quantization: null });
    }
  }
  return settings;
}

function backendSetting(fields: Record<string, unknown>, where: string, fallback: BackendSetting): BackendSetting {
  const { backend = fallback.backend, quantization = fallback.quantization } = fields;
  if (typeof backend !== 'string' || !BACKENDS.includes(backend)) throw new Error(`${where}.backend must be one of ${BACKENDS.join(', ')}`);
  if (quantization !== null && !(GGUF_QUANTIZATIONS as readonly unknown[]).includes(quantization)) {
    throw new Error(`${where}.quantization must be one of ${GGUF_QUANTIZATIONS.join(', ')}`);
  }
  return { backend: backend as BackendSetting['backend'], quantization: quantization as string | null };
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 1;
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
