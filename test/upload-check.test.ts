import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_MODEL, DATASETS, type TestServer, startTestServer } from './support/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.cleanup());

const weather = fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'));

/** The file once its upload check has given its verdict. */
async function checked(id: string) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const file = await t.client.files.retrieve(id);
    if (file.status !== 'uploaded' || Date.now() > deadline) return file;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A multipart upload as openai-python 0.28 sent it: the part named `file`, and so its file name. */
async function uploadAs2023Sdk(content: Buffer) {
  const form = new FormData();
  form.append('purpose', 'fine-tune');
  form.append('file', new Blob([new Uint8Array(content)]), 'file');
  const response = await fetch(`${t.server.baseURL}/files`, { method: 'POST', body: form, headers: { authorization: `Bearer ${t.apiKey}` } });
  return { status: response.status, body: (await response.json()) as { id: string; filename: string; status: string } };
}

describe('fine-tune uploads, judged by their content', () => {
  it("takes the 2023 SDK's upload named `file`, and it becomes processed", async () => {
    const { status, body } = await uploadAs2023Sdk(weather);
    expect(status).toBe(200);
    expect(body).toMatchObject({ filename: 'file', status: 'uploaded' });
    expect(await checked(body.id)).toMatchObject({ status: 'processed', status_details: null });
  });

  it('takes bytes with no name or any name, as the current SDKs send them', async () => {
    for (const name of ['upload', 'data.txt', 'weather']) {
      const file = await t.client.files.create({ file: await toFile(weather, name), purpose: 'fine-tune' });
      expect(file.filename).toBe(name);
      expect((await checked(file.id)).status).toBe('processed');
    }
  });

  it('refuses at upload what is not JSON lines at all, whatever its name', async () => {
    await expect(t.client.files.create({ file: await toFile(Buffer.from('name,answer\nx,y\n'), 'train.jsonl'), purpose: 'fine-tune' })).rejects.toMatchObject({
      status: 400,
      param: 'file',
      message: expect.stringContaining("'train.jsonl' is not JSON lines"),
    });
    expect((await t.client.files.list()).data.map((f) => f.filename)).not.toContain('train.jsonl');
  });

  it('marks a malformed file `error` naming its first bad line, and a job on it is refused at create, however soon', async () => {
    const lines = weather.toString('utf8').trim().split('\n');
    lines[6] = '{"messages": [{"role": "user", "content": "Hi"}]}';
    // Created in the same breath as the upload: the create waits for the check's verdict.
    const file = await t.client.files.create({ file: await toFile(Buffer.from(`${lines.join('\n')}\n`), 'broken.jsonl'), purpose: 'fine-tune' });
    const reason = 'Invalid file format. Line 7, field "messages": The example has no assistant message';
    await expect(t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).rejects.toMatchObject({
      status: 400,
      code: 'invalid_training_file',
      param: 'training_file',
      message: expect.stringContaining(reason),
    });
    expect(await t.client.files.retrieve(file.id)).toMatchObject({ status: 'error', status_details: expect.stringContaining(reason) });
  });

  it('checks on start the files a stopped server left unchecked', async () => {
    const file = await t.client.files.create({ file: await toFile(weather, 'late.jsonl'), purpose: 'fine-tune' });
    await checked(file.id);
    await t.stop();
    // As a server stopped in the middle of the check leaves it.
    const db = new Database(path.join(t.home, 'tunelab.db'));
    db.prepare("update files set status = 'uploaded' where id = ?").run(file.id);
    db.close();
    t = await startTestServer({ home: t.home });
    expect(await checked(file.id)).toMatchObject({ status: 'processed', status_details: null });
  });
});
