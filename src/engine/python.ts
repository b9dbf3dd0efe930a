import { execFileSync } from 'node:child_process';
import path from 'node:path';

/** The engine's Python package, beside `src/` and `dist/` in the repository and the installed package. */
export const ENGINE_DIR = path.resolve(import.meta.dirname, '../../engine');

let found: string | Error | null = null;

/**
 * The first Python that imports torch and numpy: `$TUNELAB_PYTHON`, `python3` on the PATH, or
 * Debian's `/usr/bin/python3` (where python3-torch installs, when the PATH's python3 is another).
 */
export function enginePython(): string {
  // Looked for once, failure included: each look imports torch (seconds) on the event loop.
  if (found instanceof Error) throw found;
  if (found) return found;
  const candidates = [process.env.TUNELAB_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => Boolean(c));
  for (const candidate of candidates) {
    try {
      execFileSync(candidate, ['-c', 'import torch, numpy'], { stdio: 'ignore' });
      found = candidate;
      return candidate;
    } catch {
      // try the next one
    }
  }
  found = new Error(
    `No Python with torch and numpy among ${candidates.join(', ')}: install python3-torch and python3-numpy, or set TUNELAB_PYTHON.`,
  );
  throw found;
}

/** The environment an engine process runs in: the package on PYTHONPATH, the rest inherited. */
export function engineEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PYTHONPATH: ENGINE_DIR, ...extra };
}
