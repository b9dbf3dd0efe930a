/**
 * `tunelab models pull` speed: a 500 MB model from the loopback hub (bench/pull-hub.ts, its own
 * process) into an empty Hugging Face cache, then the same pull again (everything cached). The
 * baseline, in the same run, is a plain `fetch` of the same weights file streamed to disk: the
 * pull's overhead is the hub client, the sha256 and the cache layout.
 *
 *     npm run bench:pull
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { hubSettings, pullModel } from '../src/models/hub-pull.js';
import { writeModelFolder } from '../test/support/model-folder.js';
import { writeResult } from './support.js';

const WEIGHT_BYTES = 500 * 1000 * 1000;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-bench-pull-'));
const mb = (bytes: number) => bytes / 1e6;

/** A model folder whose safetensors hold 500 MB of random float32s (the pull does not look inside). */
function writeBigModel(dir: string): void {
  writeModelFolder(dir);
  const header = Buffer.from(JSON.stringify({ 'model.embed_tokens.weight': { dtype: 'F32', shape: [WEIGHT_BYTES / 4], data_offsets: [0, WEIGHT_BYTES] } }).padEnd(128, ' '));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(header.length));
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  fs.writeSync(fd, Buffer.concat([size, header]));
  const chunk = randomBytes(8 << 20);
  for (let written = 0; written < WEIGHT_BYTES; written += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, WEIGHT_BYTES - written));
  fs.closeSync(fd);
}

/** The highest resident memory seen while `work` runs, sampled every 20 ms. */
async function peakRss<T>(work: () => Promise<T>): Promise<{ result: T; before: number; peak: number }> {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  try {
    const result = await work();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { result, before, peak };
  } finally {
    clearInterval(timer);
  }
}

let hub: ChildProcess | undefined;
try {
  const source = path.join(root, 'source');
  writeBigModel(source);
  hub = spawn(process.execPath, ['--import', 'tsx', path.resolve(import.meta.dirname, 'pull-hub.ts'), source], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve) => hub!.stdout!.once('data', (data: Buffer) => resolve(data.toString().trim())));

  // Baseline: the same bytes over the same loopback, streamed to disk, nothing else.
  const baselineFile = path.join(root, 'baseline.bin');
  const baselineStart = performance.now();
  const response = await fetch(`${url}/bench/pull-model/resolve/main/model.safetensors`);
  await pipeline(Readable.fromWeb(response.body as never), fs.createWriteStream(baselineFile));
  const baselineSeconds = (performance.now() - baselineStart) / 1000;
  const weightFileBytes = fs.statSync(baselineFile).size;
  fs.rmSync(baselineFile);

  const settings = { ...hubSettings({}), endpoint: url, token: undefined, offline: false, cacheDir: path.join(root, 'cache') };
  const pullStart = performance.now();
  const fresh = await peakRss(() => pullModel('bench/pull-model', { settings }));
  const pullSeconds = (performance.now() - pullStart) / 1000;
  const cachedStart = performance.now();
  const cached = await pullModel('bench/pull-model', { settings });
  const cachedSeconds = (performance.now() - cachedStart) / 1000;
  if (cached.downloadedBytes !== 0) throw new Error('the second pull downloaded again');

  const pullRate = mb(fresh.result.downloadedBytes) / pullSeconds;
  const baselineRate = mb(weightFileBytes) / baselineSeconds;
  writeResult('pull', {
    command: 'npm run bench:pull',
    downloaded_bytes: fresh.result.downloadedBytes,
    pull: { seconds: pullSeconds, mb_per_s: pullRate, rss_before_mb: mb(fresh.before), rss_growth_mb: mb(fresh.peak - fresh.before) },
    baseline_plain_fetch: { seconds: baselineSeconds, mb_per_s: baselineRate },
    ratio_pull_to_baseline: pullRate / baselineRate,
    cached_pull_seconds: cachedSeconds,
    bars: { mb_per_s_at_least: 200, rss_growth_mb_below: 100, cached_pull_seconds_below: 2 },
  });
} finally {
  hub?.kill();
  fs.rmSync(root, { recursive: true, force: true });
}
