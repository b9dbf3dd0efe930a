import { Kysely, Migrator, SqliteDialect } from 'kysely';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StepMetrics } from '../src/jobs/jobs.js';
import { migrations } from '../src/store/migrations.js';
import { openStore } from '../src/store/store.js';
import { BASE_MODEL, type TestServer, onPostgres, startTestServer, tempHome, weatherJokes } from './support/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.cleanup());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function newJob(): Promise<string> {
  const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  return (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).id;
}

const step = (n: number, total: number) => ({ message: `Step ${n}/${total}`, data: { step: n, total_steps: total, train_loss: 1 / n, train_mean_token_accuracy: 0.5 } });

describe('a job with many steps', () => {
  it('metrics?from_step=N answers the steps from N on, an evaluation joined to its step included', async () => {
    const jobId = await newJob();
    const { jobs } = t.server.services;
    const ids: string[] = [];
    for (let n = 1; n <= 300; n++) ids.push(await jobs.recordStep(jobId, step(n, 300)));
    await jobs.updateStep(jobId, ids[294]!, { message: 'Step 295/300, validated', data: { ...step(295, 300).data, valid_loss: 0.25 } });

    const tail = await t.client.get<{ data: StepMetrics[] }>(`/fine_tuning/jobs/${jobId}/metrics`, { query: { from_step: 295 } });
    expect(tail.data.map((m) => m.step)).toEqual([295, 296, 297, 298, 299, 300]);
    expect(tail.data[0]).toMatchObject({ step: 295, valid_loss: 0.25 });
    const events = (await t.client.fineTuning.jobs.listEvents(jobId, { limit: 10 })).data;
    expect(events.find((e) => e.id === ids[294])).toMatchObject({ message: 'Step 295/300, validated', data: { valid_loss: 0.25 } });
    expect((await t.client.get<{ data: StepMetrics[] }>(`/fine_tuning/jobs/${jobId}/metrics`)).data).toHaveLength(300);
    // Thinned for a chart: every 6th step back from the newest, and the evaluated one.
    const thinned = await t.client.get<{ data: StepMetrics[] }>(`/fine_tuning/jobs/${jobId}/metrics`, { query: { max_points: 50 } });
    expect(thinned.data.map((m) => m.step)).toEqual([...Array.from({ length: 50 }, (_, i) => 6 * (i + 1)), 295].sort((a, b) => a - b));
    const short = await t.client.get<{ data: StepMetrics[] }>(`/fine_tuning/jobs/${jobId}/metrics`, { query: { from_step: 290, max_points: 50 } });
    expect(short.data).toHaveLength(11);
    // Ours: a long job's messages without its steps, as the dashboard lists them.
    const messages = (await t.client.fineTuning.jobs.listEvents(jobId, { limit: 100, type: 'message' } as never)).data;
    expect(messages.length).toBeGreaterThan(1);
    expect(messages.every((e) => e.type === 'message')).toBe(true);
    expect(messages.at(-1)!.message).toBe(`Created fine-tuning job: ${jobId}`);
  });

  // SQLite has one connection, held by a transaction to its end: nothing reads or writes in between.
  it.skipIf(!onPostgres)('events are listed in the order they committed: one written while an earlier one is uncommitted waits its turn', async () => {
    const jobId = await newJob();
    const { jobs } = t.server.services;
    const db = (jobs as unknown as { db: import('../src/store/store.js').Db }).db;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const first = db.transaction().execute(async (trx) => {
      await jobs.appendEvent(jobId, { message: 'first, committed late' }, trx);
      await gate;
    });
    await sleep(100);
    const second = jobs.appendEvent(jobId, { message: 'second' });
    await sleep(300);
    // A reader now must not see the second without the first: it would never look back for it.
    const ours = new Set(['first, committed late', 'second']);
    const messages = async () => (await t.client.fineTuning.jobs.listEvents(jobId, { limit: 20 })).data.map((e) => e.message).filter((m) => ours.has(m));
    expect(await messages()).toEqual([]);
    release();
    await Promise.all([first, second]);
    expect(await messages()).toEqual(['second', 'first, committed late']);
  });
});

describe.skipIf(onPostgres)('an older database', () => {
  it('gets a metrics row for each step its metrics events recorded', async () => {
    const file = path.join(tempHome(), 'tunelab.db');
    const db = new Kysely<any>({ dialect: new SqliteDialect({ database: new SqliteDatabase(file) }) });
    const all = migrations('sqlite');
    const before = Object.fromEntries(Object.entries(all).filter(([name]) => name < '0006'));
    const { error } = await new Migrator({ db, provider: { getMigrations: async () => before } }).migrateToLatest();
    expect(error).toBeUndefined();
    await db.insertInto('organizations').values({ id: 'org-1', name: 'old', created_at: 0 }).execute();
    await db
      .insertInto('jobs')
      .values({ id: 'ftjob-old', org_id: 'org-1', model: 'm', training_file: 'file-1', seed: 1, status: 'succeeded', method: '{}', result_files: '[]', created_at: 0 })
      .execute();
    const events = Array.from({ length: 2500 }, (_, i) => ({
      id: `ftevent-${i}`,
      job_id: 'ftjob-old',
      created_at: 0,
      level: 'info',
      message: i % 2 ? `Step ${(i + 1) / 2}` : 'a message',
      type: i % 2 ? 'metrics' : 'message',
      data: i % 2 ? JSON.stringify({ step: (i + 1) / 2, train_loss: i }) : null,
    }));
    for (let i = 0; i < events.length; i += 500) await db.insertInto('job_events').values(events.slice(i, i + 500)).execute();
    await db.destroy();

    const store = await openStore(file);
    const rows = await store.db.selectFrom('job_metrics').selectAll().orderBy('step').execute();
    await store.close();
    expect(rows).toHaveLength(1250);
    expect(rows[0]).toEqual({ job_id: 'ftjob-old', step: 1, event_id: 'ftevent-1', data: JSON.stringify({ step: 1, train_loss: 1 }) });
    expect(rows.at(-1)!.step).toBe(1250);
  });
});
