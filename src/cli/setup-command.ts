import fs from 'node:fs';
import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import { useEnginePython } from '../engine/python.js';
import { SetupError, buildNativeKernels, describeEnvironment, locateEnginePython, setupEngine } from '../engine/setup.js';

export function setupCommand(program: Command): void {
  program
    .command('setup')
    .description("make the engine's Python environment (a virtual environment in the home folder) and report what it has")
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab); the environment goes to <home>/python')
    .option('--venv <dir>', 'make or update the virtual environment here instead')
    .option('--python <path>', 'use this Python as it is (one with torch ≥ 2.5, numpy and safetensors, e.g. a CUDA build); default $TUNELAB_PYTHON')
    .option('--tests', "also install what the tests use (transformers, PEFT, TRL, the openai Python SDK)")
    .option('--export', "also install llama.cpp's GGUF converter and build its llama-quantize (pinned llama-cpp-python sdist from PyPI) into <home>/tools")
    .action(async (options: { home?: string; venv?: string; python?: string; tests?: boolean; export?: boolean }) => {
      const home = resolveHome(options.home);
      await ensureEngineEnvironment(home, options, true);
      if (options.export) await installExportTools(homeLayout(home).tools);
    });
}

/**
 * What GGUF export needs, from the pinned llama-cpp-python sdist: llama.cpp's converter, and its
 * quantizer built with cmake. A host that cannot build (no cmake or compiler) still gets the
 * converter; only q4_k_m stays unavailable.
 */
async function installExportTools(tools: string): Promise<void> {
  const { installConverter, withLlamaCppSdist } = await import('../export/converter.js');
  const { installQuantizer } = await import('../export/quantizer.js');
  fs.mkdirSync(tools, { recursive: true });
  const say = (line: string) => console.log(line);
  await withLlamaCppSdist(tools, say, async (sdist) => {
    await installConverter(tools, sdist, say);
    await installQuantizer(tools, sdist, say).catch((error: unknown) =>
      console.warn(`warning: llama-quantize could not be built, so q4_k_m exports stay unavailable: ${(error as Error).message}`),
    );
  });
}

/**
 * Runs setup and prints what it found; `tunelab serve` calls it when the home has no environment.
 * A failure is printed as setup words it (what to do next) and ends the command.
 */
export async function ensureEngineEnvironment(
  home: string,
  options: { venv?: string; python?: string; tests?: boolean; export?: boolean } = {},
  always = false,
): Promise<void> {
  if (!always && locateEnginePython(home)) return;
  const started = Date.now();
  if (!always) console.log("No engine environment yet: setting one up (once; `tunelab setup` does the same).");
  const { converterDir } = await import('../export/converter.js');
  // An environment made again (a moved home, new requirements) keeps what `setup --export` put in it.
  const exportTools = options.export || fs.existsSync(converterDir(homeLayout(home).tools));
  try {
    const env = await setupEngine({ home, ...options, export: exportTools, say: (line) => console.log(line) });
    // What setup --export installs goes into this environment.
    useEnginePython(env.python);
    for (const line of describeEnvironment(env)) console.log(line);
    console.log(await buildNativeKernels());
    console.log(`Engine environment ready (${((Date.now() - started) / 1000).toFixed(1)} s).`);
  } catch (error) {
    if (!(error instanceof SetupError)) throw error;
    console.error(`error: ${error.message}`);
    process.exit(1);
  }
}
