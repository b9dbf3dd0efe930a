import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Where everything lives, per design.md's storage layout. */
export interface HomeLayout {
  root: string;
  database: string;
  blobs: string;
  models: string;
  apiKeyFile: string;
  /** The key that seals secrets kept in the database (src/store/secret-box.ts). */
  secretKeyFile: string;
  /** Where the server last listened, for the CLI on the same machine. */
  baseUrlFile: string;
  /** The server's scratch folder: per job, the engine's spec, pid and log and what it is writing (src/jobs/job-folders.ts). */
  work: string;
  /** The folder store (src/files/folder-store.ts): per job, its training arrays, checkpoints and fine-tune. */
  store: string;
  /** Logs of the model servers that answer chat and completions. */
  logs: string;
  /** A few megabytes kept free for recording a job's failure when the disk fills (src/files/disk.ts). */
  diskReserve: string;
  /** Per export: its archive (and, while it runs, its work folder). */
  exports: string;
  /** Tools fetched by a setup step, such as llama.cpp's GGUF converter. */
  tools: string;
}

export function resolveHome(flag?: string): string {
  return path.resolve(flag ?? process.env.TUNELAB_HOME ?? path.join(os.homedir(), '.tunelab'));
}

export function homeLayout(home: string): HomeLayout {
  // Absolute, so paths the engine reports compare equal to the ones kept here.
  const root = path.resolve(home);
  return {
    root,
    database: path.join(root, 'tunelab.db'),
    blobs: path.join(root, 'blobs'),
    models: path.join(root, 'models'),
    apiKeyFile: path.join(root, 'api-key'),
    secretKeyFile: path.join(root, 'secret-key'),
    baseUrlFile: path.join(root, 'base-url'),
    work: path.join(root, 'work'),
    store: path.join(root, 'store'),
    logs: path.join(root, 'logs'),
    diskReserve: path.join(root, 'disk-reserve'),
    exports: path.join(root, 'exports'),
    tools: path.join(root, 'tools'),
  };
}

export const DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024;

/** "512MB", "1.5GB", "1048576": sizes as a person writes them on the command line or in the environment. */
export function parseByteSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$/i.exec(text);
  if (!match) throw new Error(`Not a size: "${text}" (write it like 512MB or 1GB)`);
  const units: Record<string, number> = { b: 1, kb: 1e3, kib: 1024, mb: 1e6, mib: 1024 ** 2, gb: 1e9, gib: 1024 ** 3 };
  const unit = (match[2] ?? 'b').toLowerCase();
  return Math.floor(Number(match[1]) * units[unit]!);
}

/**
 * Reads `<home>/config.json` through `parse` (one section's reader); `missing` when there is no
 * file. A file that is there but wrong is an error naming the file, and `parse`'s message names
 * the field: silently ignoring a setting would be worse than refusing to start.
 */
export function readHomeConfig<T>(home: string, parse: (config: Record<string, unknown>) => T, missing: T): T {
  const file = path.join(home, 'config.json');
  if (!fs.existsSync(file)) return missing;
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  try {
    return parse(config);
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`);
  }
}
