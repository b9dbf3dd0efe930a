import { formatOf, type DatasetFormat } from './examples.js';
import { readJsonlLines } from './jsonl.js';

/**
 * The format a fine-tuning file is in, from its first example (the doctor decides it the same
 * way), reading no further; null when that line is not a JSON object.
 */
export async function firstExampleFormat(input: AsyncIterable<Buffer | Uint8Array>): Promise<DatasetFormat | null> {
  for await (const batch of readJsonlLines(input)) {
    const entry = batch[0];
    if (!entry) continue;
    if ('invalidUtf8' in entry) return null;
    let value: unknown;
    try {
      value = JSON.parse(entry.text);
    } catch {
      return null;
    }
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (formatOf(value as Record<string, unknown>) ?? 'chat') : null;
  }
  return null;
}
