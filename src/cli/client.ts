import fs from 'node:fs';
import OpenAI from 'openai';
import { homeLayout, resolveHome } from '../config.js';

/**
 * The official SDK, pointed at a tunelab server: the base URL from TUNELAB_BASE_URL or
 * OPENAI_BASE_URL (default the local server), the key from TUNELAB_API_KEY, OPENAI_API_KEY, or
 * the key the server wrote into its home folder on first start.
 */
export function connect(home?: string): OpenAI {
  const baseURL = process.env.TUNELAB_BASE_URL ?? process.env.OPENAI_BASE_URL ?? 'http://127.0.0.1:8000/v1';
  const keyFile = homeLayout(resolveHome(home)).apiKeyFile;
  const apiKey =
    process.env.TUNELAB_API_KEY ??
    process.env.OPENAI_API_KEY ??
    (fs.existsSync(keyFile) ? fs.readFileSync(keyFile, 'utf8').trim() : undefined);
  if (!apiKey) {
    throw new Error(`No API key: set TUNELAB_API_KEY, or start the server once so that it writes ${keyFile}.`);
  }
  return new OpenAI({ baseURL, apiKey, maxRetries: 1 });
}
