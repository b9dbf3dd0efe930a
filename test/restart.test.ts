import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { migrations } from '../src/store/migrations.js';
import { BASE_MODEL, DATASETS, type TestServer, onPostgres, startTestServer, tempHome, validated, weatherJokes } from './support/server.js';

const home = tempHome();
const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.stop();
  fs.rmSync(home, { recursive: true, force: true });
});

describe('a restarted server keeps everything', () => {
  it('creates the personal organization and a private key file on first start only', async () => {
    const first = await startTestServer({ home });
    servers.push(first);
    const keyFile = path.join(home, 'api-key');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const key = fs.readFileSync(keyFile, 'utf8');
    expect(key).toMatch(/^sk-tl-[A-Za-z0-9]{40}\n$/);

    const uploaded = await first.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const job = await validated(
      first.client,
      (await first.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: uploaded.id, suffix: 'kept' })).id,
    );
    const file = await first.client.files.retrieve(uploaded.id);
    expect([job.status, file.status]).toEqual(['queued', 'processed']);
    await first.stop();

    const second = await startTestServer({ home });
    servers.push(second);
    expect(fs.readFileSync(keyFile, 'utf8')).toBe(key);
    expect(await second.client.files.retrieve(file.id)).toEqual(file);
    expect(await (await second.client.files.content(file.id)).text()).toBe(fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'), 'utf8'));
    expect(await second.client.fineTuning.jobs.retrieve(job.id)).toEqual(job);
    expect((await second.client.fineTuning.jobs.listEvents(job.id)).data).toHaveLength(3);
    expect((await second.client.models.retrieve(BASE_MODEL)).id).toBe(BASE_MODEL);
    await second.stop();
  });

  it.skipIf(onPostgres)('keeps SQLite in WAL mode with its migrations recorded', () => {
    const database = new SqliteDatabase(path.join(home, 'tunelab.db'), { readonly: true });
    expect(database.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(database.prepare('select count(*) as n from organizations').get()).toEqual({ n: 1 });
    const names = Object.keys(migrations('sqlite')).sort();
    expect(database.prepare('select name from kysely_migration order by name').all()).toEqual(names.map((name) => ({ name })));
    database.close();
  });

  it('drops on start what an earlier process left half-written', async () => {
    fs.writeFileSync(path.join(home, 'blobs', '.incoming', 'abandoned'), 'partial');
    fs.writeFileSync(path.join(home, 'blobs', 'file-orphanWithoutARow000000'), 'no row names me');
    const third = await startTestServer({ home });
    servers.push(third);
    expect(fs.readdirSync(path.join(home, 'blobs', '.incoming'))).toEqual([]);
    expect(fs.existsSync(path.join(home, 'blobs', 'file-orphanWithoutARow000000'))).toBe(false);
    expect((await third.client.files.list()).data).toHaveLength(1);
  });
});
