/**
 * Latency and throughput of `GET /v1/fine_tuning/jobs?limit=20` with 10,000 jobs stored, under
 * wrk (Debian's package: microsecond latencies, its own process) on loopback. Bar (issue 2): p50 < 3 ms.
 *   apt-get install wrk && npm run bench:list-jobs
 */
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { addBenchModel, startBenchServer, writeResult } from './support.js';

const JOBS = 10_000;
const server = await startBenchServer();
try {
  await addBenchModel(server);
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey });
  const file = await client.files.create({ file: new File(['{"messages":[]}\n'], 'train.jsonl'), purpose: 'fine-tune' });
  const started = Date.now();
  for (let created = 0; created < JOBS; created += 50) {
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        client.fineTuning.jobs.create({ model: 'bench-model', training_file: file.id, suffix: `job-${created + i}`, metadata: { batch: String(created) } }),
      ),
    );
  }
  const createSeconds = (Date.now() - started) / 1000;

  const url = `${server.baseURL}/fine_tuning/jobs?limit=20`;
  const wrk = (connections: number, seconds: number) =>
    execFileSync('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Authorization: Bearer ${server.apiKey}`, url], {
      encoding: 'utf8',
    });
  wrk(1, 3); // warm-up: JIT, statement cache, SQLite page cache
  const results = [];
  for (const connections of [1, 10]) {
    const report = wrk(connections, 10);
    if (/Non-2xx|Socket errors/.test(report)) throw new Error(`wrk saw failures:\n${report}`);
    const percentile = (p: string) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(report)![1]!);
    results.push({
      connections,
      requests_per_s: Number(/Requests\/sec:\s+(\S+)/.exec(report)![1]),
      latency_ms: { p50: percentile('50'), p90: percentile('90'), p99: percentile('99') },
      server_rss_mb: server.rss() / 1e6,
    });
  }
  writeResult('list-jobs', {
    command: 'npm run bench:list-jobs',
    jobs_stored: JOBS,
    created_per_s: JOBS / createSeconds,
    tool: 'wrk -t1 --latency, 10 s per run, after a 3 s warm-up',
    results,
    bars: { p50_ms: '< 3' },
  });
} finally {
  await server.stop();
}

function toMs(value: string): number {
  const [, number, unit] = /^([\d.]+)(us|ms|s)$/.exec(value)!;
  return Number(number) * { us: 0.001, ms: 1, s: 1000 }[unit as 'us' | 'ms' | 's'];
}
