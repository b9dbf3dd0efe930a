import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import * as tar from 'tar';
import { ServiceError } from '../errors.js';
import { ENGINE_DIR, enginePython } from '../engine/python.js';
import { EXPORT_REQUIREMENTS } from '../engine/setup.js';

/**
 * llama.cpp's GGUF converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/).
 * It is llama.cpp's, so it is not copied into this project: `tunelab setup --export` downloads the
 * llama-cpp-python sdist pinned in engine/export-converter.txt from PyPI, the one versioned
 * package that carries the converter together with the gguf-py of the same llama.cpp commit (the
 * `gguf` package alone has no converter, and a converter and gguf-py of different commits
 * disagree), and unpacks only those files into the home folder's tools. The same step installs
 * what the converter imports (engine/requirements-export.txt) into the engine's Python, and
 * setting the environment up again later keeps it while the converter is there.
 */
export const CONVERTER_PIN = path.join(ENGINE_DIR, 'export-converter.txt');

const SDIST_LLAMA_CPP = 'vendor/llama.cpp/';
const CONVERTER_FILES = ['convert_hf_to_gguf.py', 'convert_lora_to_gguf.py', 'conversion/', 'gguf-py/', 'LICENSE'];

export const converterDir = (tools: string) => path.join(tools, 'llama.cpp-converter');

/** The converter's folder, or an error telling how to get it. */
export function installedConverter(tools: string): string {
  const dir = converterDir(tools);
  if (!fs.existsSync(path.join(dir, 'convert_hf_to_gguf.py'))) {
    throw new ServiceError(
      'unavailable',
      `GGUF export needs llama.cpp's converter, which this server has not installed: run \`tunelab setup --export\` on it (it downloads ${pinnedRelease()} from PyPI).`,
      { param: 'format', code: 'converter_missing' },
    );
  }
  return dir;
}

export function pinnedRelease(): string {
  const line = fs
    .readFileSync(CONVERTER_PIN, 'utf8')
    .split('\n')
    .find((l) => l.trim() && !l.trimStart().startsWith('#'));
  if (!line) throw new Error(`${CONVERTER_PIN} names no release`);
  return line.trim();
}

/**
 * Downloads the pinned llama-cpp-python sdist into a scratch folder under `tools`, hands its path
 * to `use` (installing the converter, building the quantizer) and removes it afterwards.
 */
export async function withLlamaCppSdist<T>(tools: string, log: (line: string) => void, use: (sdist: string) => Promise<T>): Promise<T> {
  const download = await fsp.mkdtemp(path.join(tools, 'download-'));
  try {
    log(`Downloading ${pinnedRelease()} (source) from PyPI`);
    await run(enginePython(), ['-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:', '-r', CONVERTER_PIN, '-d', download]);
    const sdist = (await fsp.readdir(download)).find((name) => name.endsWith('.tar.gz'));
    if (!sdist) throw new Error(`pip download left no .tar.gz in ${download}`);
    return await use(path.join(download, sdist));
  } finally {
    await fsp.rm(download, { recursive: true, force: true });
  }
}

/** Installs the converter's Python packages and unpacks the converter from the sdist; returns its folder. */
export async function installConverter(tools: string, sdist: string, log: (line: string) => void): Promise<string> {
  const python = enginePython();
  log(`Installing the converter's Python packages (${path.basename(EXPORT_REQUIREMENTS)}) into ${python}`);
  await run(python, ['-m', 'pip', 'install', '--quiet', '-r', EXPORT_REQUIREMENTS]);
  const staging = await fsp.mkdtemp(path.join(tools, 'converter-'));
  try {
    const wanted = (entry: string) => {
      const inside = entry.split('/').slice(1).join('/');
      if (!inside.startsWith(SDIST_LLAMA_CPP)) return false;
      const rest = inside.slice(SDIST_LLAMA_CPP.length);
      return CONVERTER_FILES.some((file) => (file.endsWith('/') ? rest.startsWith(file) : rest === file));
    };
    // strip: "<sdist>/vendor/llama.cpp/" is three levels.
    await tar.x({ file: sdist, cwd: staging, strip: 3, filter: wanted });
    if (!fs.existsSync(path.join(staging, 'convert_hf_to_gguf.py'))) throw new Error(`${path.basename(sdist)} carries no vendor/llama.cpp/convert_hf_to_gguf.py`);
    await fsp.writeFile(path.join(staging, 'RELEASE'), `${path.basename(sdist)}\n`);
    const dir = converterDir(tools);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(staging, dir);
    log(`llama.cpp's converter is in ${dir}`);
    return dir;
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}

/** llama.cpp's own sources in the sdist (for building its tools), unpacked into `dir`. */
export async function unpackLlamaCpp(sdist: string, dir: string): Promise<void> {
  await tar.x({ file: sdist, cwd: dir, strip: 3, filter: (entry) => entry.split('/').slice(1).join('/').startsWith(SDIST_LLAMA_CPP) });
}

export function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${path.basename(command)} ${args.slice(0, 4).join(' ')} failed (${code}): ${stderr.trim().split('\n').slice(-3).join(' ')}`)),
    );
  });
}
