import fs from 'node:fs';
import type OpenAI from 'openai';
import { homeLayout, resolveHome } from '../config.js';

/**
 * The official SDK, pointed at a tunelab server. The environment wins (TUNELAB_BASE_URL or
 * OPENAI_BASE_URL; TUNELAB_API_KEY or OPENAI_API_KEY); otherwise what the server wrote into its
 * home folder: where it listens, and the key it made on first start. The SDK is loaded on first
 * use, so commands that do not call the API start quickly.
 */
export async function connect(home?: string): Promise<OpenAI> {
  const layout = homeLayout(resolveHome(home));
  const baseURL =
    process.env.TUNELAB_BASE_URL ?? process.env.OPENAI_BASE_URL ?? readIfThere(layout.baseUrlFile) ?? 'http://127.0.0.1:8000/v1';
  const apiKey = process.env.TUNELAB_API_KEY ?? process.env.OPENAI_API_KEY ?? readIfThere(layout.apiKeyFile);
  if (!apiKey) {
    throw new Error(`No API key: set TUNELAB_API_KEY, or start the server once so that it writes ${layout.apiKeyFile}.`);
  }
  const { default: OpenAIClient } = await import('openai');
  return new OpenAIClient({ baseURL, apiKey, maxRetries: 1 });
}

const readIfThere = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : undefined);
