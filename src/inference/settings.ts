import { readHomeConfig } from '../config.js';
import { DEFAULT_SERVE_POOL, type ServePoolOptions } from '../engine/serve-pool.js';

export type ServingSettings = Omit<ServePoolOptions, 'logDir'>;

const FIELDS = {
  idle_seconds: ['idleMs', 1000],
  load_timeout_seconds: ['loadTimeoutMs', 1000],
  max_batch: ['maxBatch', 1],
  max_adapters: ['maxAdapters', 1],
  max_models: ['maxModels', 1],
} as const;

/**
 * The `serving` section of `<home>/config.json`: `{"serving": {"idle_seconds": 600,
 * "load_timeout_seconds": 300, "max_batch": 16, "max_adapters": 8, "max_models": 4}}`, each optional. A section
 * that is there but wrong is an error naming the field.
 */
export function loadServingSettings(home: string): ServingSettings {
  return readHomeConfig(home, (config) => parseServing(config.serving), DEFAULT_SERVE_POOL);
}

function parseServing(section: unknown): ServingSettings {
  if (section === undefined || section === null) return DEFAULT_SERVE_POOL;
  if (typeof section !== 'object' || Array.isArray(section)) throw new Error('serving must be an object');
  const settings: ServingSettings = { ...DEFAULT_SERVE_POOL };
  for (const [key, value] of Object.entries(section)) {
    if (!(key in FIELDS)) throw new Error(`serving.${key} is not a serving setting (${Object.keys(FIELDS).join(', ')})`);
    const [field, scale] = FIELDS[key as keyof typeof FIELDS];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error(`serving.${key} must be a whole number of at least 1`);
    settings[field] = value * scale;
  }
  return settings;
}
