import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKER_RETENTION_MS, type WorkerInfo, WorkerRegistry } from '../src/jobs/workers.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { CLI, runCli } from './support/cli.js';
import { openStore } from '../src/store/store.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { storedNames } from './support/stored.js';
import {
  BASE_MODEL,
  type TestServer,
  allEvents,
  finished,
  metricsSteps,
  onPostgres,
  postgresFor,
  startTestServer,
  tempHome,
  untilStep,
  weatherJokes,
} from './support/server.js';

const MODEL = 'trainable-qwen3';
/** Seconds: short, so a lost worker's job moves on within the test. */
const LEASE_SECONDS = 3;

/** `tunelab worker` as its own process, as an operator starts one on a GPU host, with what it says on stderr. */
interface WorkerProcess {
  process: ChildProcess;
  stderr: () => string;
}

/** `GET /v1/workers`, as an administrator's key reads it. */
const workersListed = async (t: TestServer) => ((await t.client.get('/workers')) as { data: WorkerInfo[] }).data;

describe.skipIf(!onPostgres)('training on workers through PostgreSQL', () => {
  let t: TestServer;
  let database: string;
  const workers: WorkerProcess[] = [];

  function startWorker(...extra: string[]): WorkerProcess {
    const child = spawn(process.execPath, [CLI, 'worker', '--database', database, '--storage', t.home, '--lease', String(LEASE_SECONDS), ...extra], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let said = '';
    child.stderr!.on('data', (chunk: Buffer) => (said += chunk.toString()));
    const worker = { process: child, stderr: () => said };
    workers.push(worker);
    return worker;
  }

  const listWorkers = () => workersListed(t);
  const workerOf = (info: WorkerInfo[], pid: number) => info.find((w) => w.pid === pid && w.status === 'active');

  async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** The pid of the worker holding the job's lease. */
  const holder = (jobId: string) =>
    until(`a worker to hold ${jobId}`, async () => (await listWorkers()).find((w) => w.status === 'active' && w.jobs.some((j) => j.id === jobId))?.pid);

  async function atLeastWorkers(n: number) {
    const active = (await listWorkers()).filter((w) => w.status === 'active').length;
    for (let i = active; i < n; i++) startWorker();
    await until(`${n} active workers`, async () => (await listWorkers()).filter((w) => w.status === 'active').length >= n);
  }

  /** A worker's scratch folder for a job: `<storage>/work/<worker id>/<job>` (src/worker.ts). */
  const scratchOf = (workerId: string, jobId: string) => path.join(t.home, 'work', workerId, jobId);

  /** What is left of a job's runs in the workers' scratch folders, but for the engines' logs. */
  const scratchLeft = (jobId: string) =>
    fs
      .readdirSync(path.join(t.home, 'work'))
      .map((entry) => path.join(t.home, 'work', entry, jobId))
      .filter((folder) => fs.existsSync(folder))
      .flatMap((folder) => fs.readdirSync(folder).filter((name) => name !== 'engine.log').map((name) => path.join(folder, name)));

  /** Every file under `folder`, recursively. */
  const filesUnder = (folder: string): string[] =>
    fs.existsSync(folder) ? fs.readdirSync(folder, { recursive: true, encoding: 'utf8' }).map((name) => path.join(folder, name)).filter((file) => fs.statSync(file, { throwIfNoEntry: false })?.isFile()) : [];
  /** A file as it was written: its inode and modification time survive a rename into the store; a reused inode has a new time. */
  const identity = (file: string) => {
    const stats = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
    return stats ? `${stats.dev}:${stats.ino}:${stats.mtimeNs}` : file;
  };

  async function queue(nEpochs: number) {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    return t.client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, hyperparameters: { n_epochs: nEpochs } });
  }

  beforeAll(async () => {
    const home = tempHome();
    new BaseModelRegistry(path.join(home, 'models')).add(await writeTrainableModelFolder(path.join(home, 'sources', MODEL)), MODEL);
    // The API server trains nothing: the workers do.
    t = await startTestServer({ home, engineSlots: 0, leaseMs: LEASE_SECONDS * 1000 });
    database = await postgresFor(home);
  }, 120_000);

  afterAll(async () => {
    for (const worker of workers) worker.process.kill('SIGKILL');
    await t?.cleanup();
  });

  it('two workers train six queued jobs to the end, each job on one worker at a time; a worker too small for them takes none', async () => {
    const [a, b] = [startWorker(), startWorker()];
    const small = startWorker('--memory', '1KB');
    const jobs = [];
    for (let i = 0; i < 6; i++) jobs.push(await queue(1));
    const ids = new Set(jobs.map((job) => job.id));

    // Sampled while they train: no job is ever held by two workers.
    const seenOn = new Map<string, Set<number>>();
    let done = false;
    const sampling = (async () => {
      while (!done) {
        const listed = await listWorkers();
        for (const worker of listed) {
          for (const job of worker.jobs.filter((j) => ids.has(j.id))) {
            expect(listed.filter((w) => w.jobs.some((j) => j.id === job.id))).toHaveLength(1);
            seenOn.set(job.id, (seenOn.get(job.id) ?? new Set()).add(worker.pid));
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const ended = await Promise.all(jobs.map((job) => finished(t.client, job.id, 240_000)));
    done = true;
    await sampling;

    expect(ended.map((job) => job.status)).toEqual(Array(6).fill('succeeded'));
    const starters = new Set<string>();
    for (const job of ended) {
      expect(await metricsSteps(t.client, job.id)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
      const starts = (await allEvents(t.client, job.id)).filter((e) => e.message === 'Fine-tuning job started');
      expect(starts).toHaveLength(1);
      starters.add((starts[0]!.data as { worker: string }).worker);
      expect(seenOn.get(job.id)?.size ?? 1).toBe(1);
      // Its files are in the store, and only there: the model (the one epoch's checkpoint was its last); the arrays went.
      await until(`${job.id} to be cleaned up`, async () => storedNames(t.home, job.id).join() === 'model' && scratchLeft(job.id).length === 0);
    }
    // Both workers trained; the small one, never.
    const listed = await listWorkers();
    const workerIds = [a, b, small].map((w) => workerOf(listed, w.process.pid!)!.id);
    expect([...starters].sort()).toEqual([workerIds[0], workerIds[1]].sort());
    expect(workerOf(listed, small.process.pid!)!.capabilities.cpus).toBeGreaterThan(0);
    // The operator's view: every worker, by the CLI.
    const cli = await runCli(['workers', 'list', '--json'], { env: { ...process.env, TUNELAB_BASE_URL: t.server.baseURL, TUNELAB_API_KEY: t.apiKey } });
    expect(cli.code).toBe(0);
    expect((JSON.parse(cli.stdout) as WorkerInfo[]).map((w) => w.id)).toEqual(expect.arrayContaining(workerIds));
    small.process.kill('SIGTERM');
  }, 300_000);

  it('kill -9 of the worker training a job: the other continues it from its newest recorded checkpoint, every step once, one model', async () => {
    const created = await queue(5);
    await untilStep(t.client, created.id, 14, 120_000);
    const pid = await holder(created.id);
    const victim = workers.find((w) => w.process.pid === pid)!;
    victim.process.kill('SIGKILL');

    // The survivor has a scratch folder of its own: it continues from the checkpoint it fetched from the store.
    const resumed = await until('the run resumed on the survivor', async () =>
      (await allEvents(t.client, created.id)).find((e) => e.message.startsWith('Fine-tuning job resumed from its checkpoint at step')),
    );
    const step = /step (\d+)$/.exec(resumed.message)![1];
    const survivor = (resumed.data as { worker: string }).worker;
    const spec = await until('the survivor\'s spec', async () => {
      const file = path.join(scratchOf(survivor, created.id), 'spec.json');
      return fs.existsSync(file) && (JSON.parse(fs.readFileSync(file, 'utf8')) as { resume_from: string | null });
    });
    expect(spec.resume_from).toMatch(new RegExp(`^${path.join(t.home, 'store', created.id)}/step-${step}-\\w{8}$`));

    const job = await finished(t.client, created.id, 240_000);
    expect(job.status).toBe('succeeded');
    expect(await metricsSteps(t.client, job.id)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const messages = (await allEvents(t.client, job.id)).map((e) => e.message);
    expect(messages.find((m) => m.startsWith('The worker training the job stopped renewing its lease'))).toMatch(
      /continues from its checkpoint at step (10|20)$/,
    );
    expect(messages.filter((m) => m.startsWith('New fine-tuned model created'))).toHaveLength(1);
    const models = (await t.client.models.list()).data.map((m) => m.id).filter((id) => id.startsWith(job.fine_tuned_model!));
    expect(models.sort()).toEqual([job.fine_tuned_model, `${job.fine_tuned_model}:ckpt-step-30`, `${job.fine_tuned_model}:ckpt-step-40`].sort());
    await until('the clean-up', async () => storedNames(t.home, job.id).join() === 'model,step-30,step-40');
  }, 300_000);

  it('pause and cancel made through the API reach the job on the worker training it', async () => {
    await atLeastWorkers(1);
    const created = await queue(5);
    await untilStep(t.client, created.id, 3, 120_000);
    expect((await t.client.fineTuning.jobs.pause(created.id)).status).toBe('paused');
    await until('the paused engine to save', async () =>
      (await allEvents(t.client, created.id)).some((e) => e.message.startsWith('Checkpoint saved at step')),
    );
    const pausedAt = (await metricsSteps(t.client, created.id)).length;
    expect((await t.client.fineTuning.jobs.resume(created.id)).status).toBe('queued');
    await untilStep(t.client, created.id, pausedAt + 2, 120_000);
    await t.client.fineTuning.jobs.cancel(created.id);
    const job = await finished(t.client, created.id);
    expect(job.status).toBe('cancelled');
    // The engine on the worker stopped, and left nothing behind but the checkpoint models the job made (the pause's).
    const kept = (await t.client.models.list()).data.flatMap((m) => (m.id.includes(job.id.slice(6, 14)) ? [`step-${/:ckpt-step-(\d+)$/.exec(m.id)![1]}`] : []));
    expect(kept.length).toBeGreaterThan(0);
    await until('the worker to clean up', async () => scratchLeft(job.id).length === 0 && storedNames(t.home, job.id).join() === kept.sort().join()).catch(
      (error: Error) => {
        throw new Error(`${error.message}: the store holds ${storedNames(t.home, job.id).join()} (models: ${kept.join()}); left in scratch: ${scratchLeft(job.id).join()}`);
      },
    );
    // Steps up to the pause, each recorded once.
    const steps = await metricsSteps(t.client, job.id);
    expect(steps.length).toBeGreaterThan(0);
    expect(steps).toEqual(Array.from({ length: steps.length }, (_, i) => i + 1));
  }, 300_000);

  it('a worker stalled past its lease (SIGSTOP) and woken (SIGCONT) writes nothing more for the job it lost, in the database or in storage', async () => {
    await atLeastWorkers(2);
    // Long enough that the stalled worker's engine, which is not stopped, is still training when the other worker takes over.
    const created = await queue(10);
    await untilStep(t.client, created.id, 12, 120_000);
    const pid = await holder(created.id);
    const stalled = workers.find((w) => w.process.pid === pid)!;
    const stalledId = workerOf(await listWorkers(), pid)!.id;
    stalled.process.kill('SIGSTOP');
    // Its engine trains on, saving checkpoints where its worker told it to: what it writes is noted, file by file.
    const stalledScratch = scratchOf(stalledId, created.id);
    const writtenByStalled = new Set<string>();
    const note = () =>
      ['checkpoints', 'output'].flatMap((kind) => filesUnder(path.join(stalledScratch, kind))).forEach((file) => writtenByStalled.add(identity(file)));
    await until('the stalled engine to save a checkpoint', async () => fs.existsSync(path.join(stalledScratch, 'checkpoints', 'step-20')));
    note();
    // The other worker takes the job over; the stalled one wakes while the job trains there.
    await until('the take-over', async () =>
      (await allEvents(t.client, created.id)).some((e) => e.message.startsWith('The worker training the job stopped renewing its lease')),
    );
    note();
    stalled.process.kill('SIGCONT');
    await until('the woken worker to find its lease lost', async () => /lease on \S+ (was lost|expired)/.test(stalled.stderr()));

    const job = await finished(t.client, created.id, 240_000);
    expect(job.status).toBe('succeeded');
    expect(await metricsSteps(t.client, job.id)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    const events = await allEvents(t.client, job.id);
    expect(events.filter((e) => e.message.startsWith('New fine-tuned model created'))).toHaveLength(1);
    expect(events.filter((e) => e.level === 'error')).toEqual([]);
    // Every start after the take-over is the other worker's.
    const starts = events.filter((e) => e.message.startsWith('Fine-tuning job'));
    expect(starts.at(-1)!.data).not.toMatchObject({ worker: stalledId });
    // Storage holds the job's models, and none of the stalled engine's checkpoints or model: not in the store, not in any scratch folder.
    await until('the clean-up', async () => storedNames(t.home, job.id).join() === 'model,step-80,step-90' && scratchLeft(job.id).length === 0);
    expect(writtenByStalled.size).toBeGreaterThan(0);
    expect(filesUnder(t.home).filter((file) => writtenByStalled.has(identity(file)))).toEqual([]);
  }, 300_000);

  it("the dashboard's Workers page shows each worker, what it holds, and the job it trains", async () => {
    await atLeastWorkers(1);
    const created = await queue(5);
    await untilStep(t.client, created.id, 2, 120_000);
    const pid = await holder(created.id);
    const browser = await launchBrowser();
    try {
      const page = await openDashboard(browser, t, '#/workers');
      const row = page.getByRole('row').filter({ hasText: created.id });
      await row.waitFor();
      expect(await row.textContent()).toContain(`pid ${pid}`);
      expect(await row.locator('td[data-label="Status"]').textContent()).toBe('active');
      await screenshot(page, 'workers');
    } finally {
      await browser.close();
      await t.client.fineTuning.jobs.cancel(created.id);
    }
  }, 300_000);
});

describe('the workers table', () => {
  it('forgets a worker silent past the retention once another starts, unless a job it held still names it', async () => {
    const t = await startTestServer();
    const store = await openStore(onPostgres ? await postgresFor(t.home) : path.join(t.home, 'tunelab.db'));
    try {
      // Workers on other hosts, as `tunelab worker` records them, through the same database.
      const registry = new WorkerRegistry(store.db, 30_000);
      const capabilities = { cpus: 2, cpu_model: 'test', memory_bytes: 2 ** 30, gpus: [] };
      for (const id of ['gone', 'holding', 'recent']) await registry.register({ id, slots: 1, capabilities });
      await registry.stopped('recent');
      // 'gone' and 'holding' last beat past the retention; a job still names 'holding' as its lease's worker.
      const longAgo = Date.now() - WORKER_RETENTION_MS - 60 * 60 * 1000;
      await store.db.updateTable('workers').set({ heartbeat_at: longAgo }).where('id', 'in', ['gone', 'holding']).execute();
      const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
      const job = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id });
      await store.db.updateTable('jobs').set({ lease_worker: 'holding', lease_token: 'lost', lease_expires_at: longAgo }).where('id', '=', job.id).execute();
      expect((await workersListed(t)).map((w) => [w.id, w.status]).sort()).toEqual([['gone', 'silent'], ['holding', 'silent'], ['recent', 'stopped']]);

      await registry.register({ id: 'fresh', slots: 1, capabilities });
      const after = await workersListed(t);
      expect(after.map((w) => [w.id, w.status]).sort()).toEqual([['fresh', 'active'], ['holding', 'silent'], ['recent', 'stopped']]);
      expect(after.find((w) => w.id === 'holding')!.jobs.map((j) => j.id)).toEqual([job.id]);

      // Once the job is released, the silent worker goes at the next start.
      await store.db.updateTable('jobs').set({ lease_worker: null, lease_token: null, lease_expires_at: null }).where('id', '=', job.id).execute();
      await registry.register({ id: 'fresh', slots: 1, capabilities });
      expect((await workersListed(t)).map((w) => w.id).sort()).toEqual(['fresh', 'recent']);
    } finally {
      await store.close();
      await t.cleanup();
    }
  });
});
