import type { Llama } from 'node-llama-cpp';

let runtime: Promise<Llama> | null = null;

/**
 * llama.cpp through node-llama-cpp's prebuilt binaries, CPU only, loaded on first use (most
 * servers never load it). node-llama-cpp is an optional dependency (its binaries for every
 * platform are ~670 MB): an install without it serves and exports with everything else. No thread cap here: each context says how many threads it uses (the
 * export check one, serving as many as the host has math cores, unless told otherwise).
 */
export function llamaRuntime(): Promise<Llama> {
  runtime ??= import('node-llama-cpp').then(
    ({ getLlama }) => getLlama({ gpu: false, build: 'never', logLevel: 'error' as never, maxThreads: 0 }),
    (error: unknown) => {
      runtime = null;
      throw new Error(
        `llama.cpp's runtime, the optional npm package node-llama-cpp, is not installed here (npm install node-llama-cpp): ${(error as Error).message}`,
      );
    },
  );
  return runtime;
}
