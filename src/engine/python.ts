import path from 'node:path';

/** The engine's Python package, beside `src/` and `dist/` in the repository and the installed package. */
export const ENGINE_DIR = path.resolve(import.meta.dirname, '../../engine');

let chosen: string | null = null;

/** The Python engine processes of this server run (`locateEnginePython` at start). */
export function useEnginePython(python: string): void {
  chosen = python;
}

/** The Python an engine process runs: the one the server chose, else `$TUNELAB_PYTHON`. */
export function enginePython(): string {
  const python = chosen ?? process.env.TUNELAB_PYTHON;
  if (!python) {
    throw new Error(
      'No engine environment: run `tunelab setup` (it makes one in the home folder), or set TUNELAB_PYTHON to a Python with torch ≥ 2.5, numpy and safetensors.',
    );
  }
  return python;
}

/** The environment an engine process runs in: the package on PYTHONPATH, the rest inherited. */
export function engineEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PYTHONPATH: ENGINE_DIR, ...extra };
}
