import { spawn } from 'node:child_process';
import { engineEnv, enginePython } from './python.js';

/** One JSON line of the engine (engine/README.md, "Events of train"). */
export interface EngineEvent {
  type: string;
  [field: string]: unknown;
}

export interface EngineResult {
  code: number | null;
  events: EngineEvent[];
  stderr: string;
}

/** Runs a short engine command (`init`, `merge`, `generate`) to its end and collects its events and log. */
export function runEngineCommand(args: string[]): Promise<EngineResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(enginePython(), ['-m', 'tunelab_engine', ...args], { env: engineEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
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
