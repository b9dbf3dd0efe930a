/**
 * Upload throughput and the server's memory while it stores a 100 MB file, sent by curl from
 * a separate process. Bar (issue 2): >= 150 MB/s, peak RSS growth < 64 MB.
 *   npm run bench:upload
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { startBenchServer, writeResult } from './support.js';

const SIZE = 100 * 1024 * 1024;
const RUNS = 5;

const server = await startBenchServer();
const file = path.join(server.home, 'upload-100mb.jsonl');
const line = JSON.stringify({
  messages: [
    { role: 'system', content: '你是一个会讲笑话的天气助理。' },
    { role: 'user', content: 'What is the weather like in Wuhan this winter? 今年武汉的冬天冷不冷?' },
    { role: 'assistant', content: 'Cold enough that the snowmen ask for scarves. 冷得连雪人都想穿羽绒服。' },
  ],
});
const fd = fs.openSync(file, 'w');
const block = Buffer.from(`${line}\n`.repeat(Math.floor((1024 * 1024) / (line.length + 1))));
for (let written = 0; written < SIZE; written += block.length) fs.writeSync(fd, block, 0, Math.min(block.length, SIZE - written));
fs.closeSync(fd);

const runs = [];
try {
  for (let run = 0; run < RUNS; run++) {
    const before = server.rss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, server.rss())), 5);
    const started = process.hrtime.bigint();
    // Asynchronously, so the sampler keeps running while curl sends.
    const { stdout: out } = await promisify(execFile)('curl', [
      '-sS', '-f', '-H', `Authorization: Bearer ${server.apiKey}`,
      '-F', 'purpose=fine-tune', '-F', `file=@${file}`, `${server.baseURL}/files`,
    ]);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    clearInterval(sampler);
    peak = Math.max(peak, server.rss());
    const uploaded = JSON.parse(out) as { id: string; bytes: number };
    if (uploaded.bytes !== SIZE) throw new Error(`stored ${uploaded.bytes} bytes, sent ${SIZE}`);
    runs.push({ seconds, mb_per_s: SIZE / 1e6 / seconds, rss_before_mb: before / 1e6, rss_growth_mb: (peak - before) / 1e6 });
  }
} finally {
  await server.stop();
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
writeResult('upload', {
  command: 'npm run bench:upload',
  file_bytes: SIZE,
  runs,
  median_mb_per_s: median(runs.map((r) => r.mb_per_s)),
  max_rss_growth_mb: Math.max(...runs.map((r) => r.rss_growth_mb)),
  bars: { mb_per_s: '>= 150', rss_growth_mb: '< 64' },
});
