import { readHomeConfig } from '../config.js';
import { DEFAULT_SCREENING_POLICY, parseScreeningPolicy, type ScreeningPolicy } from './screening.js';
import { DEFAULT_PRICES, type Prices } from './stats.js';

/** What an operator may set for the dataset doctor in `<home>/config.json`. */
export interface DatasetSettings {
  prices: Prices;
  screening: ScreeningPolicy;
}

export const DEFAULT_DATASET_SETTINGS: DatasetSettings = { prices: DEFAULT_PRICES, screening: DEFAULT_SCREENING_POLICY };

/**
 * Reads `<home>/config.json`: `{"prices": {"training_per_1k": 0.008, ...}, "screening": {...}}`.
 * A missing file means the defaults; a file that is there but wrong is an error naming the field,
 * since silently ignoring a blocklist would be worse than refusing to start.
 */
export function loadDatasetSettings(home: string): DatasetSettings {
  return readHomeConfig(
    home,
    (config) => ({ prices: parsePrices(config.prices), screening: parseScreeningPolicy(config.screening) }),
    DEFAULT_DATASET_SETTINGS,
  );
}

function parsePrices(section: unknown): Prices {
  if (section === undefined) return DEFAULT_PRICES;
  if (typeof section !== 'object' || section === null) throw new Error('prices must be an object');
  const prices = { ...DEFAULT_PRICES };
  for (const [key, value] of Object.entries(section)) {
    if (!(key in prices)) throw new Error(`prices.${key} is not a price; the prices are ${Object.keys(prices).join(', ')}`);
    if (typeof value !== 'number' || !(value >= 0)) throw new Error(`prices.${key} must be a number of dollars per 1,000 tokens`);
    prices[key as keyof Prices] = value;
  }
  return prices;
}
