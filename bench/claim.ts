/**
 * Claim latency: 10,000 queued jobs in PostgreSQL and 8 workers claiming at once, each on its own
 * connection, as `tunelab worker` processes do: the runner's look at the queue (`JobLeases.waiting`),
 * `JobLeases.claimQueued` (FOR UPDATE SKIP LOCKED), then the move to running. Baseline, alternated
 * with it in the same run on the same queue: how the runner took a job before leases (every queued
 * job read oldest first, then a conditional update of the first, retried when another worker won
 * it); and the runner's claim before the look (a take-over attempt, an UPDATE, then the claim).
 * Bar (issue 21): p50 < 20 ms.
 * Then an idle runner's look at the queue, once a second, for a worker no queued job fits: the
 * look (one read) against the two claims it made before (two UPDATEs that lease nothing).
 *   npm run build && OMP_WAIT_POLICY=PASSIVE npx tsx bench/claim.ts
 */
import os from 'node:os';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { JobLeases } from '../src/jobs/leases.js';
import type { Database } from '../src/store/schema.js';
import { openStore } from '../src/store/store.js';
import { findPostgresBin, startPostgres } from '../test/support/postgres.js';
import { writeResult } from './support.js';

const QUEUED = 10_000;
const WORKERS = 8;
const CLAIMS_PER_WORKER = 40;
const ROUNDS = 3;

const postgres = startPostgres(findPostgresBin()!);
try {
  const admin = new pg.Client({ connectionString: postgres.adminUrl });
  await admin.connect();
  await admin.query('create database claim_bench');
  await admin.end();
  const url = postgres.adminUrl.replace(/\/postgres\?/, '/claim_bench?');
  const store = await openStore(url);
  await store.db.insertInto('organizations').values({ id: 'org-bench', name: 'bench', created_at: 0, email: null }).execute();
  const method = JSON.stringify({ type: 'supervised', supervised: { hyperparameters: {} } });
  for (let start = 0; start < QUEUED; start += 1000) {
    const rows = Array.from({ length: 1000 }, (_, i) => ({
      id: `ftjob-bench${String(start + i).padStart(8, '0')}`,
      org_id: 'org-bench',
      model: 'bench-model',
      training_file: 'file-bench',
      validation_file: null,
      suffix: null,
      seed: 0,
      status: 'queued',
      method,
      error: null,
      fine_tuned_model: null,
      trained_tokens: null,
      result_files: '[]',
      estimated_finish: null,
      metadata: null,
      created_at: 0,
      finished_at: null,
      memory_needed: 1e9,
    }));
    await store.db.insertInto('jobs').values(rows).execute();
  }
  await sql`analyze jobs`.execute(store.db);

  // One connection per worker, as separate worker processes have.
  const workers = Array.from({ length: WORKERS }, () => new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) }));

  async function leased(db: Kysely<Database>, worker: number): Promise<number> {
    const leases = new JobLeases(db, 30_000);
    const room = { memory: 16e9, processes: 1 };
    const t0 = performance.now();
    if (!(await leases.waiting(room)).queued) throw new Error('the queue ran dry');
    const lease = await leases.claimQueued(`worker-${worker}`, room);
    if (!lease) throw new Error('the queue ran dry');
    await db.updateTable('jobs').set({ status: 'running' }).where('id', '=', lease.jobId).where('lease_token', '=', lease.token).execute();
    return performance.now() - t0;
  }

  /** The runner's claim before the look: a take-over attempt (an UPDATE), then the queued claim. */
  async function takeOverThenClaim(db: Kysely<Database>, worker: number): Promise<number> {
    const leases = new JobLeases(db, 30_000);
    const room = { memory: 16e9, processes: 1 };
    const t0 = performance.now();
    if (await leases.takeOverExpired(`worker-${worker}`, room)) throw new Error('a running job was taken over');
    const lease = await leases.claimQueued(`worker-${worker}`, room);
    if (!lease) throw new Error('the queue ran dry');
    await db.updateTable('jobs').set({ status: 'running' }).where('id', '=', lease.jobId).where('lease_token', '=', lease.token).execute();
    return performance.now() - t0;
  }

  async function readAllThenTake(db: Kysely<Database>): Promise<number> {
    const t0 = performance.now();
    for (;;) {
      const queued = await db.selectFrom('jobs').selectAll().where('status', '=', 'queued').orderBy('seq', 'asc').execute();
      const first = queued[0];
      if (!first) throw new Error('the queue ran dry');
      const moved = await db.updateTable('jobs').set({ status: 'running' }).where('id', '=', first.id).where('status', '=', 'queued').executeTakeFirst();
      if (moved.numUpdatedRows > 0n) return performance.now() - t0;
    }
  }

  const percentile = (values: number[], p: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
  };
  const summary = (values: number[]) => ({
    claims: values.length,
    p50_ms: +percentile(values, 50).toFixed(2),
    p90_ms: +percentile(values, 90).toFixed(2),
    p99_ms: +percentile(values, 99).toFixed(2),
  });

  const contender: number[] = [];
  const before: number[] = [];
  const baseline: number[] = [];
  const loads: number[][] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const [claim, into] of [[leased, contender], [takeOverThenClaim, before], [readAllThenTake, baseline]] as const) {
      loads.push(os.loadavg());
      await Promise.all(
        workers.map(async (db, worker) => {
          for (let i = 0; i < CLAIMS_PER_WORKER; i++) into.push(await claim(db, worker));
        }),
      );
      // Untimed: the jobs taken end, as trained jobs do, so no arm takes over another's (the baseline leases nothing).
      await store.db.updateTable('jobs').set({ status: 'succeeded', lease_worker: null, lease_token: null, lease_expires_at: null }).where('status', '=', 'running').execute();
    }
  }
  // Idle: nothing fits a worker of 1 KB, so every look finds nothing.
  const small = { memory: 1024, processes: 1 };
  const idleLeases = new JobLeases(workers[0]!, 30_000);
  const look: number[] = [];
  const twoClaims: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    loads.push(os.loadavg());
    for (let i = 0; i < 100; i++) {
      let t0 = performance.now();
      const waiting = await idleLeases.waiting(small);
      if (waiting.queued || waiting.lost) throw new Error('a job fits the idle worker');
      look.push(performance.now() - t0);
      t0 = performance.now();
      if ((await idleLeases.takeOverExpired('idle', small)) || (await idleLeases.claimQueued('idle', small))) throw new Error('a job fits the idle worker');
      twoClaims.push(performance.now() - t0);
    }
  }
  const left = await store.db.selectFrom('jobs').select(sql<number>`count(*)`.as('n')).where('status', '=', 'queued').executeTakeFirstOrThrow();
  const result = {
    command: 'npm run build && OMP_WAIT_POLICY=PASSIVE npx tsx bench/claim.ts',
    load_average_during: loads.map((l) => l.map((x) => +x.toFixed(2))),
    queued_at_start: QUEUED,
    queued_at_end: Number(left.n),
    workers: WORKERS,
    rounds: ROUNDS,
    leased_claim: summary(contender),
    baseline_read_all_then_take: summary(baseline),
    p50_ratio_baseline_over_leased: +(percentile(baseline, 50) / percentile(contender, 50)).toFixed(1),
    before_the_look_take_over_then_claim: summary(before),
    p50_ratio_before_over_leased: +(percentile(before, 50) / percentile(contender, 50)).toFixed(2),
    idle_look_for_a_worker_nothing_fits: { look_one_read: summary(look), before_two_updates: summary(twoClaims) },
    idle_p50_ratio_before_over_look: +(percentile(twoClaims, 50) / percentile(look, 50)).toFixed(1),
    bar: 'p50 < 20 ms (issue 21)',
  };
  writeResult('claim', result);
  await Promise.all(workers.map((db) => db.destroy()));
  await store.close();
} finally {
  postgres.stop();
}
