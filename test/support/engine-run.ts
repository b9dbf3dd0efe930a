import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';

const ENGINE_DIR = path.resolve(import.meta.dirname, '../../engine');

export interface EngineEvent {
  type: string;
  [field: string]: unknown;
}

/** The first Python that imports torch: $TUNELAB_PYTHON, python3 on PATH, or Debian's /usr/bin/python3. */
export function enginePython(): string {
  const candidates = [process.env.TUNELAB_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c));
  for (const candidate of candidates) {
    try {
      execFileSync(candidate, ['-c', 'import torch, numpy'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error(`no Python with torch and numpy among ${candidates.join(', ')}`);
}

/** Runs `python3 -m tunelab_engine ARGS` and collects its JSON-line events. */
export function runEngine(args: string[]): Promise<{ code: number | null; events: EngineEvent[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(enginePython(), ['-m', 'tunelab_engine', ...args], {
      env: { ...process.env, PYTHONPATH: ENGINE_DIR },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const events = stdout
        .split('\n')
        .filter((line) => line.trim())
        .map((line) => JSON.parse(line) as EngineEvent);
      resolve({ code, events, stderr });
    });
  });
}
