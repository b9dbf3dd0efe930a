/**
 * A long job's curve: 200,000 metric steps written straight into the database (as the runner
 * writes them: a metrics event and a job_metrics row per step), then `GET .../metrics?from_step=199990`
 * through HTTP, 500 times one after another after 50 warm-up requests. The baseline, in the same
 * run on the same database, is how the endpoint read the curve before the metrics table: every
 * metrics event of the job, parsed, then filtered. Then the job's page in Chromium until its curve
 * holds every step. Bars (issue 20): p50 < 20 ms; the page in < 1 s.
 *   npm run build && npx tsx bench/long-job.ts
 */
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import OpenAI from 'openai';
import { launchBrowser } from '../test/support/browser.js';
import { addBenchModel, startBenchServer, writeResult } from './support.js';

const STEPS = 200_000;
const FROM_STEP = 199_990;
const RUNS = 500;

const server = await startBenchServer(['--slots', '0']);
try {
  await addBenchModel(server);
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey });
  const file = await client.files.create({ file: new File(['{"messages":[]}\n'], 'train.jsonl'), purpose: 'fine-tune' });
  const job = await client.fineTuning.jobs.create({ model: 'bench-model', training_file: file.id });

  const db = new SqliteDatabase(path.join(server.home, 'tunelab.db'));
  db.pragma('busy_timeout = 5000');
  const insertEvent = db.prepare(
    "insert into job_events (id, job_id, created_at, level, message, type, data) values (?, ?, ?, 'info', ?, 'metrics', ?)",
  );
  const insertStep = db.prepare('insert into job_metrics (job_id, step, event_id, data) values (?, ?, ?, ?)');
  const started = Date.now();
  db.transaction(() => {
    for (let step = 1; step <= STEPS; step++) {
      const data = JSON.stringify({ step, total_steps: STEPS, train_loss: 2 / Math.sqrt(step), train_mean_token_accuracy: 0.5 + step / STEPS / 2 });
      const id = `ftevent-bench${String(step).padStart(11, '0')}`;
      insertEvent.run(id, job.id, Math.floor(Date.now() / 1000), `Step ${step}/${STEPS}`, data);
      insertStep.run(job.id, step, id, data);
    }
  })();
  const insertSeconds = (Date.now() - started) / 1000;

  const url = `${server.baseURL}/fine_tuning/jobs/${job.id}/metrics?from_step=${FROM_STEP}`;
  const headers = { authorization: `Bearer ${server.apiKey}` };
  const timings: number[] = [];
  for (let run = 0; run < 50 + RUNS; run++) {
    const t0 = performance.now();
    const response = await fetch(url, { headers });
    const body = (await response.json()) as { data: unknown[] };
    if (body.data.length !== STEPS - FROM_STEP + 1) throw new Error(`expected ${STEPS - FROM_STEP + 1} steps, got ${body.data.length}`);
    if (run >= 50) timings.push(performance.now() - t0);
  }

  // The baseline: the query and filtering the endpoint did before (all of the job's metrics events).
  const allEvents = db.prepare("select id, data from job_events where job_id = ? and type = 'metrics' order by seq asc");
  const baseline: number[] = [];
  for (let run = 0; run < 7; run++) {
    const t0 = performance.now();
    const steps = allEvents.all(job.id).map((row) => JSON.parse((row as { data: string }).data) as { step: number });
    const kept = steps.filter((m) => m.step >= FROM_STEP);
    if (kept.length !== STEPS - FROM_STEP + 1) throw new Error('baseline read the wrong steps');
    if (run >= 2) baseline.push(performance.now() - t0);
  }
  db.close();

  // The job's page in Chromium, from navigation until the curve is drawn with the points the page asks for (3 loads).
  const shown = (await (await fetch(`${server.baseURL}/fine_tuning/jobs/${job.id}/metrics?max_points=4000`, { headers })).json()) as { data: unknown[] };
  const browser = await launchBrowser();
  const pageLoads: number[] = [];
  for (let run = 0; run < 3; run++) {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.addInitScript((key) => localStorage.setItem('tunelab.apiKey', key), server.apiKey);
    const t0 = performance.now();
    await page.goto(`${new URL('/ui/', server.baseURL).href}#/jobs/${job.id}`);
    await page.waitForSelector(`figure[data-points="${shown.data.length}"] canvas`, { timeout: 120_000 });
    pageLoads.push(performance.now() - t0);
    await page.close();
  }
  await browser.close();

  const p = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
  const round = (ms: number) => Math.round(ms * 1000) / 1000;
  writeResult('long-job', {
    command: 'npm run build && npx tsx bench/long-job.ts',
    steps_stored: STEPS,
    insert_seconds: insertSeconds,
    request: `GET /v1/fine_tuning/jobs/{id}/metrics?from_step=${FROM_STEP} (11 steps), fetch from another process on loopback, ${RUNS} sequential after 50 warm-up`,
    latency_ms: { p50: round(p(timings, 0.5)), p90: round(p(timings, 0.9)), p99: round(p(timings, 0.99)) },
    baseline: {
      what: "the old read, in-process with no HTTP: every metrics event of the job from job_events, parsed, then filtered (5 runs after 2 warm-up)",
      median_ms: round(p(baseline, 0.5)),
    },
    baseline_over_new_p50: Math.round(p(baseline, 0.5) / p(timings, 0.5)),
    job_page: {
      what: `Chromium (headless), navigation until the curve is drawn: ${shown.data.length} points (metrics?max_points=4000, as the page asks on first load)`,
      loads_ms: pageLoads.map(round),
    },
    bars: { p50_ms: '< 20', job_page_ms: '< 1000' },
  });
} finally {
  await server.stop();
}
