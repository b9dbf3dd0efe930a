import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, expect, it } from 'vitest';
import { type TestServer, startTestServer, tempHome, weatherJokes } from './support/server.js';

const parent = tempHome();
let test: TestServer | undefined;
afterAll(async () => {
  await test?.stop();
  fs.rmSync(parent, { recursive: true, force: true });
});

/** Every file and folder under `folder` (links not followed) with its permission bits. */
function modes(folder: string): Array<[string, string]> {
  return fs.readdirSync(folder, { recursive: true, encoding: 'utf8' }).flatMap((name) => {
    const stats = fs.lstatSync(path.join(folder, name));
    return stats.isSymbolicLink() ? [] : [[name, (stats.mode & 0o777).toString(8)] as [string, string]];
  });
}

it('a home the server makes is its own: the folder 0700, the database, its WAL, uploads and keys 0600; webhook secrets sealed', async () => {
  const home = path.join(parent, 'home');
  // An older server's database, readable by all, as it was before the server set its umask.
  fs.mkdirSync(home, { mode: 0o755 });
  new SqliteDatabase(path.join(home, 'tunelab.db')).close();
  fs.chmodSync(path.join(home, 'tunelab.db'), 0o644);
  test = await startTestServer({ home });
  const file = await test.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const { secret } = await test.server.services.notifications.addEndpoint(await orgOf(home), 'http://127.0.0.1:9/hook');

  expect((fs.statSync(home).mode & 0o777).toString(8)).toBe('700');
  const all = new Map(modes(home));
  for (const name of ['tunelab.db', 'tunelab.db-wal', 'api-key', 'secret-key', path.join('blobs', file.id)]) expect([name, all.get(name)]).toEqual([name, '600']);
  // Nothing the server wrote is open to the group or others (the model folders are the test's copies of package files).
  const open = [...all].filter(([name, mode]) => !/^model(s|-sources)\//.test(name) && (Number.parseInt(mode, 8) & 0o077) !== 0);
  expect(open).toEqual([]);

  const stored = new SqliteDatabase(path.join(home, 'tunelab.db'), { readonly: true })
    .prepare('select secret from webhook_endpoints')
    .pluck()
    .get() as string;
  expect(stored).toMatch(/^aes-256-gcm:/);
  expect(stored).not.toContain(secret.slice('whsec_'.length, 20));
});

async function orgOf(home: string): Promise<string> {
  const db = new SqliteDatabase(path.join(home, 'tunelab.db'), { readonly: true });
  try {
    return db.prepare('select id from organizations').pluck().get() as string;
  } finally {
    db.close();
  }
}
