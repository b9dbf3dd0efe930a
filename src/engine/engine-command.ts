import { spawn } from 'node:child_process';
import { type EngineEvent, parseEngineEvent } from './protocol.js';
import { engineEnv, enginePython } from './python.js';

export type { EngineEvent } from './protocol.js';

export interface EngineResult {
  code: number | null;
  events: EngineEvent[];
  stderr: string;
}

/** Runs an engine command (`init`, `merge`, `generate`, or a `train` waited for) to its end and collects its events and log; a stdout line that is not an event goes to `stderr`. */
export function runEngineCommand(args: string[]): Promise<EngineResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(enginePython(), ['-m', 'tunelab_engine', ...args], { env: engineEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const events: EngineEvent[] = [];
      for (const line of stdout.split('\n').filter((l) => l.trim())) {
        const event = parseEngineEvent(line);
        if (event) events.push(event);
        else stderr += `${line}\n`;
      }
      resolve({ code, events, stderr });
    });
  });
}
