import { createHash } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { runEngineCommand } from './engine-command.js';
import { ofType } from './protocol.js';
import { ENGINE_DIR } from './python.js';

/**
 * The engine's Python environment: a virtual environment that `tunelab setup` makes and fills from
 * `engine/requirements.txt`, or a Python the operator points at (a GPU host's own CUDA build of
 * torch), accepted as it is when it has what the engine imports.
 */

export const REQUIREMENTS = path.join(ENGINE_DIR, 'requirements.txt');
/** The referees and SDKs the tests add (transformers, PEFT, TRL, openai). */
export const TEST_REQUIREMENTS = path.join(ENGINE_DIR, 'requirements-test.txt');
/** What llama.cpp's GGUF converter imports (`tunelab setup --export`). */
export const EXPORT_REQUIREMENTS = path.join(ENGINE_DIR, 'requirements-export.txt');

/** The oldest torch whose APIs the engine uses (SDPA's enable_gqa, torch.get_autocast_dtype, fused AdamW on CPU). */
const MIN_TORCH: [number, number] = [2, 5];
const MIN_PYTHON: [number, number] = [3, 10];

/** What `setup` found, as it reports it. */
export interface EngineEnvironment {
  python: string;
  pythonVersion: string;
  torch: string;
  numpy: string;
  safetensors: string;
  /** `cuda` when torch sees a GPU, else `cpu`. */
  device: 'cuda' | 'cpu';
  gpus: { name: string; memoryGb: number }[];
  /** Whether the device computes in bf16 natively (GPU: Ampere or newer; CPU: AVX512-BF16 or AMX). */
  bf16: boolean;
}

/** Setup cannot go on; the message says what to do. */
export class SetupError extends Error {}

export interface SetupOptions {
  /** The virtual environment to make or update (default `<home>/python`). */
  venv?: string;
  /** An existing Python to use as it is, instead of a virtual environment of ours. */
  python?: string;
  /** Add the tests' packages (`requirements-test.txt`). */
  tests?: boolean;
  /** Add what llama.cpp's converter imports (`requirements-export.txt`). */
  export?: boolean;
  /** Where setup says what it does; pip's own output goes to the same terminal. */
  say?: (line: string) => void;
}

export const defaultVenv = (home: string) => path.join(home, 'python');
const venvPython = (venv: string) => path.join(venv, 'bin', 'python');
/** Written last by a successful install: which requirements it installed, so a second run installs nothing. */
const stampFile = (venv: string) => path.join(venv, 'tunelab-setup.json');

const run = promisify(execFile);

/**
 * The Python an engine process runs: `$TUNELAB_PYTHON` when set, else the environment `setup` made
 * in the home folder; null when there is neither (`setup` is what makes one).
 */
export function locateEnginePython(home: string): string | null {
  if (process.env.TUNELAB_PYTHON) return process.env.TUNELAB_PYTHON;
  const venv = defaultVenv(home);
  return fs.existsSync(stampFile(venv)) ? venvPython(venv) : null;
}

/** Makes (or checks) the engine's environment and reports what is in it. */
export async function setupEngine(options: SetupOptions & { home: string }): Promise<EngineEnvironment> {
  const say = options.say ?? (() => {});
  const python = options.python ?? (options.venv ? undefined : process.env.TUNELAB_PYTHON);
  if (python) return checkGivenPython(python);

  const venv = path.resolve(options.venv ?? defaultVenv(options.home));
  const files = [REQUIREMENTS, ...(options.tests ? [TEST_REQUIREMENTS] : []), ...(options.export ? [EXPORT_REQUIREMENTS] : [])];
  const wanted = requirementsHash(files);
  if (readStamp(venv) === wanted) {
    const found = await probe(venvPython(venv));
    if (!(found instanceof Error)) return found;
    say(`The environment at ${venv} no longer works (${found.message}); installing again.`);
  }

  if (!fs.existsSync(venvPython(venv))) {
    const base = await findBasePython();
    say(`Making a virtual environment for the engine at ${venv} (${base.version}, ${base.path})`);
    await runShown(base.path, ['-m', 'venv', venv], 'making the virtual environment');
  }
  say(`Installing ${files.map((f) => path.relative(process.cwd(), f) || f).join(' and ')} into it (torch is the big one)`);
  await runShown(venvPython(venv), ['-m', 'pip', 'install', '--disable-pip-version-check', ...files.flatMap((f) => ['-r', f])], 'installing the engine\'s packages');
  const found = await probe(venvPython(venv));
  if (found instanceof Error) throw new SetupError(`The packages installed, but the engine's imports fail in ${venv}: ${found.message}`);
  fs.writeFileSync(stampFile(venv), JSON.stringify({ requirements: wanted, environment: found }, null, 2));
  return found;
}

/** One line per fact, for `tunelab setup` and the server's log. */
export function describeEnvironment(env: EngineEnvironment): string[] {
  const device =
    env.device === 'cuda' ? `CUDA: ${env.gpus.map((g) => `${g.name} (${g.memoryGb} GB)`).join(', ')}` : 'CPU (no CUDA device)';
  return [
    `Python ${env.pythonVersion} (${env.python})`,
    `torch ${env.torch}, numpy ${env.numpy}, safetensors ${env.safetensors}`,
    `device: ${device}; bf16 ${env.bf16 ? 'supported' : 'not supported (training and serving in float32)'}`,
  ];
}

/**
 * Compiles the engine's C kernels for this machine (`build-native`, into the user's cache); one
 * line saying what came of it. Never fails setup: without them the engine decodes on torch's own
 * products, only slower.
 */
export async function buildNativeKernels(): Promise<string> {
  const result = await runEngineCommand(['build-native']);
  const [event] = ofType(result.events, 'native');
  if (!event) return `C kernels: not built (the engine said: ${result.stderr.trim().split('\n').at(-1) ?? `exit ${result.code}`}); decoding uses torch's products`;
  if (!event.built) return `C kernels: not built (${event.reason}); decoding uses torch's products`;
  if (!event.runs_here) return `C kernels: built (${event.path}), but this CPU lacks AVX512-BF16; decoding uses torch's products`;
  return `C kernels: built for this CPU (${event.path})`;
}

async function checkGivenPython(python: string): Promise<EngineEnvironment> {
  const found = await probe(python);
  if (found instanceof Error) {
    throw new SetupError(
      `${python} cannot run the engine: ${found.message}. Install torch ≥ ${MIN_TORCH.join('.')}, numpy and safetensors into it ` +
        `(${python} -m pip install -r ${REQUIREMENTS}, or your own CUDA build of torch and then numpy safetensors), ` +
        'or run `tunelab setup` without --python (and without TUNELAB_PYTHON) to make an environment of its own.',
    );
  }
  return found;
}

const PROBE = `
import json, platform, sys
import numpy, safetensors, torch
gpus = [{"name": torch.cuda.get_device_name(i),
         "memoryGb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
        for i in range(torch.cuda.device_count())]
if gpus:
    bf16 = torch.cuda.is_bf16_supported()
else:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    bf16 = bool((check and check()) or (amx and amx()))
print(json.dumps({"python": sys.executable, "pythonVersion": platform.python_version(),
                  "torch": torch.__version__, "numpy": numpy.__version__,
                  "safetensors": safetensors.__version__, "device": "cuda" if gpus else "cpu",
                  "gpus": gpus, "bf16": bf16}))
`;

/** What a Python has for the engine, or why it cannot run it. */
async function probe(python: string): Promise<EngineEnvironment | Error> {
  let stdout: string;
  try {
    ({ stdout } = await run(python, ['-c', PROBE], { timeout: 120_000 }));
  } catch (error) {
    const stderr = String((error as { stderr?: string }).stderr ?? '');
    const missing = /No module named '([^']+)'/.exec(stderr);
    if (missing) return new Error(`it has no ${missing[1]}`);
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Error('no such program');
    return new Error(stderr.trim().split('\n').at(-1) || (error as Error).message);
  }
  const env = JSON.parse(stdout) as EngineEnvironment;
  if (!atLeast(env.torch, MIN_TORCH)) return new Error(`its torch is ${env.torch}; the engine needs ${MIN_TORCH.join('.')} or newer`);
  return env;
}

const atLeast = (version: string, [major, minor]: [number, number]) => {
  const [a = 0, b = 0] = version.split(/[.+]/).map((p) => Number.parseInt(p, 10));
  return a > major || (a === major && b >= minor);
};

/** The newest Python 3.10+ on the PATH that can make a virtual environment. */
async function findBasePython(): Promise<{ path: string; version: string }> {
  const tried: string[] = [];
  for (const candidate of ['python3.13', 'python3.12', 'python3.11', 'python3.10', 'python3', '/usr/bin/python3']) {
    let version: string;
    try {
      ({ stdout: version } = await run(candidate, ['-c', 'import platform, venv, ensurepip; print(platform.python_version())']));
    } catch (error) {
      if (/No module named '(venv|ensurepip)'/.test(String((error as { stderr?: string }).stderr))) {
        tried.push(`${candidate} (no venv module: on Debian or Ubuntu, apt-get install python3-venv)`);
      }
      continue;
    }
    version = version.trim();
    if (atLeast(version, MIN_PYTHON)) return { path: candidate, version: `Python ${version}` };
    tried.push(`${candidate} (Python ${version})`);
  }
  throw new SetupError(
    `No Python ${MIN_PYTHON.join('.')} or newer that can make a virtual environment was found` +
      `${tried.length ? `; found ${tried.join(', ')}` : ' on the PATH'}. Install one (python.org, or apt-get install python3 python3-venv), ` +
      'or point tunelab at a Python that has torch: tunelab setup --python /path/to/python.',
  );
}

/** Runs a step with its output on this terminal (pip's progress), failing with what to do next. */
function runShown(program: string, args: string[], step: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', (error) => reject(new SetupError(`${step} failed: ${error.message}`)));
    child.on('close', (code) => {
      if (code === 0) return resolve();
      reject(
        new SetupError(
          `${step} failed (${program} exited with ${code}; pip's reason is above). If no package index can be reached, ` +
            'install torch ≥ 2.5, numpy and safetensors into a Python yourself and run: tunelab setup --python /path/to/python',
        ),
      );
    });
  });
}

function requirementsHash(files: string[]): string {
  const hash = createHash('sha256');
  for (const file of files) hash.update(fs.readFileSync(file));
  return hash.digest('hex');
}

function readStamp(venv: string): string | null {
  try {
    return (JSON.parse(fs.readFileSync(stampFile(venv), 'utf8')) as { requirements?: string }).requirements ?? null;
  } catch {
    return null;
  }
}
