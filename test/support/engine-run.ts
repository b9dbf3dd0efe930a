import { spawn } from 'node:child_process';
import { engineEnv, enginePython } from '../../src/engine/python.js';

export interface EngineEvent {
  type: string;
  [field: string]: unknown;
}

/** Runs `python3 -m tunelab_engine ARGS` and collects its JSON-line events. */
export function runEngine(args: string[]): Promise<{ code: number | null; events: EngineEvent[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(enginePython(), ['-m', 'tunelab_engine', ...args], {
      env: engineEnv(),
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
