import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { DATASETS, type TestServer, finished, retryingClient, startTestServer, tempHome, untilStep, weatherJokes } from './support/server.js';

/**
 * A full disk at each place the server writes: the home (or one of its folders) on a small tmpfs,
 * filled up at the moment that matters. Mounting needs root; elsewhere these are skipped.
 */
const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('full-disk tests skipped: mounting a small tmpfs needs root');

const mounts: string[] = [];
const homes: string[] = [];
let modelSource: string;

function mountTmpfs(folder: string, size: string): void {
  fs.mkdirSync(folder, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', folder]);
  mounts.push(folder);
}

/** A home with the given folders (or the home itself, '.') each on its own small tmpfs. */
function homeOnTmpfs(folders: Record<string, string>): string {
  const home = tempHome();
  homes.push(home);
  for (const [folder, size] of Object.entries(folders)) mountTmpfs(path.join(home, folder), size);
  return home;
}

/** Takes all but `leave` bytes of the disk `folder` is on. */
function fill(folder: string, leave = 0): string {
  const filler = path.join(folder, 'filler');
  const stats = fs.statfsSync(folder);
  let left = Math.max(0, stats.bavail * stats.bsize - leave);
  const fd = fs.openSync(filler, 'a');
  const chunk = Buffer.alloc(1024 * 1024);
  try {
    while (left > 0) {
      const n = fs.writeSync(fd, chunk, 0, Math.min(chunk.length, left));
      left -= n;
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

async function serverOn(home: string, engineSlots = 0): Promise<TestServer> {
  const test = await startTestServer({ home, engineSlots });
  if (!fs.existsSync(path.join(home, 'models', 'trainable'))) fs.symlinkSync(modelSource, path.join(home, 'models', 'trainable'));
  return test;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/**
 * After space is freed and the server restarted: the database passes SQLite's integrity check
 * and every file the API lists downloads whole (its bytes hash to what was stored).
 */
async function expectIntactAfterRestart(home: string, uploaded: Map<string, string>): Promise<void> {
  const db = new SqliteDatabase(path.join(home, 'tunelab.db'), { readonly: true });
  expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
  const stored = new Map((db.prepare('select id, sha256, bytes from files where deleted_at is null').all() as Array<{ id: string; sha256: string; bytes: number }>).map((r) => [r.id, r]));
  db.close();
  const test = await serverOn(home);
  try {
    const files = (await test.client.files.list()).data;
    for (const file of files) {
      const bytes = Buffer.from(await (await test.client.files.content(file.id)).arrayBuffer());
      expect(bytes.length).toBe(file.bytes);
      expect(sha256(bytes)).toBe(stored.get(file.id)?.sha256);
      if (uploaded.has(file.id)) expect(sha256(bytes)).toBe(uploaded.get(file.id));
    }
    expect(fs.readdirSync(path.join(home, 'blobs', '.incoming'))).toEqual([]);
  } finally {
    await test.stop();
  }
}

async function uploadJokes(client: OpenAI, uploaded: Map<string, string>): Promise<string> {
  const file = await client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  uploaded.set(file.id, sha256(fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'))));
  return file.id;
}

describe.skipIf(!isRoot)('a full disk', () => {
  beforeAll(async () => {
    modelSource = await writeTrainableModelFolder(path.join(tempHome(), 'trainable'));
    homes.push(path.dirname(modelSource));
  }, 120_000);

  afterAll(() => {
    for (const mount of mounts.reverse()) execFileSync('umount', ['-l', mount]);
    for (const home of homes) fs.rmSync(home, { recursive: true, force: true });
  });

  it('during an upload: a 507 naming the disk, not retried; nothing half-written stays; the server keeps answering', async () => {
    const home = homeOnTmpfs({ blobs: '4m' });
    const uploaded = new Map<string, string>();
    const test = await serverOn(home);
    const kept = await uploadJokes(test.client, uploaded);
    const filler = fill(path.join(home, 'blobs'), 64 * 1024);

    const { client: counting, requests } = retryingClient(test);
    const big = new File([Buffer.alloc(512 * 1024, '{"messages":[]}\n')], 'big.jsonl');
    const error = await counting.files.create({ file: big, purpose: 'fine-tune' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(507);
    expect((error as InstanceType<typeof OpenAI.APIError>).message).toMatch(
      new RegExp(`No space left on device while storing what this request sent \\(.* MB free on the disk of ${path.resolve(home)}\\)`),
    );
    expect(requests()).toBe(1);
    expect((await test.client.files.list()).data.map((f) => f.id)).toEqual([kept]);
    expect(fs.readdirSync(path.join(home, 'blobs', '.incoming'))).toEqual([]);

    await test.stop();
    fs.rmSync(filler);
    await expectIntactAfterRestart(home, uploaded);
  });

  it('before training: a job whose checkpoints cannot fit fails at once, saying what it needs', async () => {
    const home = homeOnTmpfs({ work: '8m' });
    const test = await serverOn(home, 1);
    try {
      const file = await uploadJokes(test.client, new Map());
      // A full fine-tune of the tiny model: about 40 MB of weights and 80 MB of optimizer state per checkpoint.
      const created = await test.client.fineTuning.jobs.create({ model: 'trainable', training_file: file, hyperparameters: { full: true } as never });
      const job = await finished(test.client, created.id, 30_000);
      expect(job.status).toBe('failed');
      expect(job.error?.code).toBe('insufficient_disk_space');
      expect(job.error?.message).toMatch(/not enough disk space: its checkpoints and fine-tuned model need about \d+ MB, 8\.\d MB free on the disk of /);
    } finally {
      await test.stop();
    }
  });

  it('while validating the files: the job fails with the disk named, within 10 s', async () => {
    const home = homeOnTmpfs({ work: '1m' });
    const uploaded = new Map<string, string>();
    const test = await serverOn(home, 1);
    const file = await uploadJokes(test.client, uploaded);
    const filler = fill(path.join(home, 'work'));
    const created = await test.client.fineTuning.jobs.create({ model: 'trainable', training_file: file });
    const job = await finished(test.client, created.id, 10_000);
    expect(job.status).toBe('failed');
    expect(job.error?.message).toMatch(new RegExp(`^No space left on device while writing the training arrays \\(0\\.0 MB free on the disk of ${path.join(home, 'work', 'validation')}\\)$`));
    expect((await test.client.models.list()).data.length).toBeGreaterThan(0);
    await test.stop();
    fs.rmSync(filler);
    await expectIntactAfterRestart(home, uploaded);
  });

  it('while saving a checkpoint: the job fails with the step and the sizes within 10 s, its engine stopped', async () => {
    const home = homeOnTmpfs({ work: '8m' });
    const uploaded = new Map<string, string>();
    const test = await serverOn(home, 1);
    const file = await uploadJokes(test.client, uploaded);
    const created = await test.client.fineTuning.jobs.create({ model: 'trainable', training_file: file, hyperparameters: { n_epochs: 2 } });
    await untilStep(test.client, created.id, 1);
    const engine = Number(fs.readFileSync(path.join(home, 'work', created.id, 'engine.pid'), 'utf8').split('\n')[0]);
    // Room for the engine's log, none for the first checkpoint (at the end of the first epoch).
    const filler = fill(path.join(home, 'work'), 16 * 1024);
    const job = await finished(test.client, created.id, 10_000);
    expect(job.status).toBe('failed');
    expect(job.error?.code).toBe('disk_full');
    expect(job.error?.message).toMatch(/^No space left on device while saving the checkpoint at step 10 \(needs about \d+\.\d MB, \d+\.\d MB free\)$/);
    expect(fs.existsSync(`/proc/${engine}`)).toBe(false);
    // Nothing half-written stays.
    const checkpoints = path.join(home, 'work', created.id, 'checkpoints');
    expect(fs.existsSync(checkpoints) ? fs.readdirSync(checkpoints).filter((name) => name.endsWith('.tmp')) : []).toEqual([]);
    expect((await test.client.fineTuning.jobs.list()).data.map((j) => j.id)).toContain(created.id);
    await test.stop();
    fs.rmSync(filler);
    await expectIntactAfterRestart(home, uploaded);
  });

  it('when the database itself is on the full disk: the job is still recorded as failed within 10 s', async () => {
    const home = homeOnTmpfs({ '.': '48m' });
    const uploaded = new Map<string, string>();
    const test = await serverOn(home, 1);
    const file = await uploadJokes(test.client, uploaded);
    const created = await test.client.fineTuning.jobs.create({ model: 'trainable', training_file: file, hyperparameters: { n_epochs: 3 } });
    await untilStep(test.client, created.id, 2);
    const filler = fill(home);
    const job = await finished(test.client, created.id, 10_000);
    expect(job.status).toBe('failed');
    expect(job.error?.message).toMatch(/^No space left on device while (recording step \d+|saving the checkpoint at step \d+) \(/);
    // Still answering, writes included, once there is room again.
    expect((await test.client.fineTuning.jobs.retrieve(created.id)).status).toBe('failed');
    await test.stop();
    fs.rmSync(filler);
    await expectIntactAfterRestart(home, uploaded);
  });

  it('while writing the result file: the job fails saying so, and no result file is listed', async () => {
    const home = homeOnTmpfs({ blobs: '2m' });
    const uploaded = new Map<string, string>();
    const test = await serverOn(home, 1);
    const file = await uploadJokes(test.client, uploaded);
    const filler = fill(path.join(home, 'blobs'));
    const created = await test.client.fineTuning.jobs.create({ model: 'trainable', training_file: file, hyperparameters: { n_epochs: 1 } });
    const job = await finished(test.client, created.id, 60_000);
    expect(job.status).toBe('failed');
    expect(job.error?.message).toMatch(new RegExp(`^No space left on device while writing the result file \\(0\\.0 MB free on the disk of ${path.join(home, 'blobs')}\\)$`));
    expect(job.result_files).toEqual([]);
    await test.stop();
    fs.rmSync(filler);
    await expectIntactAfterRestart(home, uploaded);
  });
});
