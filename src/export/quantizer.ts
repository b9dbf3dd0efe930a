import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ServiceError } from '../errors.js';
import { pinnedRelease, run, unpackLlamaCpp } from './converter.js';

/**
 * llama.cpp's own quantizer (`llama-quantize`), for the k-quants its converter does not write
 * (q4_k_m). Nothing on PyPI or npm ships the binary pinned to a release (node-llama-cpp's prebuilt
 * binaries carry libllama but not its tools; llama-cpp-python's wheels are built on install), so
 * `tunelab setup --export` builds just this one target with cmake from the llama.cpp sources in the
 * same pinned llama-cpp-python sdist the converter comes from: same commit, nothing committed here.
 */
export const quantizerDir = (tools: string) => path.join(tools, 'llama.cpp-quantize');
const binary = (tools: string) => path.join(quantizerDir(tools), 'llama-quantize');

/** The quantizer, or an error telling how to get it. */
export function installedQuantizer(tools: string): string {
  const file = binary(tools);
  if (!fs.existsSync(file)) {
    throw new ServiceError(
      'unavailable',
      `q4_k_m needs llama.cpp's llama-quantize, which this server has not built: run \`tunelab setup --export\` on it (it builds it from ${pinnedRelease()} with cmake and a C++ compiler).`,
      { param: 'quantization', code: 'quantizer_missing' },
    );
  }
  return file;
}

/**
 * Where a built llama-quantize is kept per release, so another home on this machine (or the
 * tests' homes) copies it instead of building again.
 */
const cacheFor = (sdist: string) =>
  path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'tunelab', 'llama-quantize', path.basename(sdist, '.tar.gz'));

/** Installs llama-quantize into the home's tools, built once per release on this machine; returns the binary. */
export async function installQuantizer(tools: string, sdist: string, log: (line: string) => void): Promise<string> {
  const cache = cacheFor(sdist);
  if (!fs.existsSync(path.join(cache, 'llama-quantize'))) await buildQuantizer(sdist, cache, log);
  else log(`Using llama-quantize built before in ${cache}`);
  const dir = quantizerDir(tools);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.cp(cache, dir, { recursive: true });
  log(`llama.cpp's llama-quantize is in ${dir}`);
  return binary(tools);
}

/** Builds llama-quantize from the sdist's llama.cpp (static, CPU only, no network features) into `out`. */
async function buildQuantizer(sdist: string, out: string, log: (line: string) => void): Promise<void> {
  for (const tool of ['cmake', 'c++']) {
    if (!(await found(tool))) throw new Error(`building llama-quantize needs ${tool} (e.g. apt-get install cmake g++)`);
  }
  await fsp.mkdir(path.dirname(out), { recursive: true });
  const scratch = await fsp.mkdtemp(`${out}-build-`);
  try {
    const source = path.join(scratch, 'llama.cpp');
    const build = path.join(scratch, 'build');
    await fsp.mkdir(source);
    await unpackLlamaCpp(sdist, source);
    const started = Date.now();
    log(`Building llama.cpp's llama-quantize from ${path.basename(sdist)} (cmake; minutes on a small machine)`);
    const generator = (await found('ninja')) ? ['-G', 'Ninja'] : [];
    await run('cmake', [
      '-S', source, '-B', build, ...generator,
      '-DCMAKE_BUILD_TYPE=Release', '-DBUILD_SHARED_LIBS=OFF', '-DGGML_NATIVE=OFF', '-DGGML_OPENMP=OFF',
      '-DLLAMA_CURL=OFF', '-DLLAMA_OPENSSL=OFF', '-DLLAMA_BUILD_TESTS=OFF', '-DLLAMA_BUILD_EXAMPLES=OFF', '-DLLAMA_BUILD_SERVER=OFF',
      '-DLLAMA_BUILD_TOOLS=ON',
    ]);
    await run('cmake', ['--build', build, '--target', 'llama-quantize', '-j', String(os.availableParallelism())]);
    const staging = path.join(scratch, 'out');
    await fsp.mkdir(staging);
    await fsp.copyFile(path.join(build, 'bin', 'llama-quantize'), path.join(staging, 'llama-quantize'));
    await fsp.chmod(path.join(staging, 'llama-quantize'), 0o755);
    await fsp.copyFile(path.join(source, 'LICENSE'), path.join(staging, 'LICENSE'));
    await fsp.writeFile(path.join(staging, 'RELEASE'), `${path.basename(sdist)}\n`);
    await fsp.rename(staging, out);
    log(`Built llama-quantize in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/** `llama-quantize IN OUT TYPE` (TYPE as llama.cpp names it, e.g. Q4_K_M). */
export async function quantize(quantizer: string, input: string, output: string, type: string): Promise<void> {
  try {
    await run(quantizer, [input, output, type]);
  } catch (error) {
    throw new ServiceError('server', `llama.cpp's llama-quantize failed: ${(error as Error).message}`, { code: 'quantization_failed' });
  }
}

function found(command: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(command, ['--version'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}
