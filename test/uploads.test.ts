import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import OpenAI, { toStreamingFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestServer, startTestServer } from './support/server.js';

const LIMIT = 1024 * 1024;
let t: TestServer;
beforeAll(async () => {
  t = await startTestServer({ maxUploadBytes: LIMIT });
});
afterAll(() => t.cleanup());

const blobsDir = () => path.join(t.home, 'blobs');
/** Everything in blob storage, half-received uploads included. */
const storedBlobs = () => [
  ...fs.readdirSync(blobsDir()).filter((name) => name !== '.incoming'),
  ...fs.readdirSync(path.join(blobsDir(), '.incoming')),
];

async function until(condition: () => boolean, what: string) {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const line = '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n';
const jsonl = (bytes: number) => line.repeat(Math.ceil(bytes / line.length));

describe('uploads are stored whole or not at all', () => {
  it('keeps nothing of a client that gives up halfway', async () => {
    const boundary = 'tunelabtestboundary';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n',
    );
    const url = new URL(`${t.server.baseURL}/files`);
    const request = http.request(url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t.client.apiKey}`,
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(head.length + 500_000 + 100),
      },
    });
    request.on('error', () => {});
    request.write(head);
    request.write(jsonl(200_000).slice(0, 200_000));
    // The server has started writing the file when a temporary blob appears.
    await until(() => fs.readdirSync(path.join(blobsDir(), '.incoming')).length === 1, 'the upload to start');
    request.destroy();
    await until(() => storedBlobs().length === 0, 'the partial upload to be removed');
    expect((await t.client.files.list()).data).toEqual([]);
  });

  it('refuses a file over the limit with 413 when the size is declared up front', async () => {
    const error = await t.client.files
      .create({ file: new File([jsonl(2 * LIMIT)], 'big.jsonl'), purpose: 'fine-tune' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(error).toMatchObject({ status: 413, param: 'file', code: 'file_too_large' });
    expect(storedBlobs()).toEqual([]);
    expect((await t.client.files.list()).data).toEqual([]);
  });

  it('refuses a streamed file over the limit with 413 once the limit is crossed', async () => {
    async function* chunks() {
      for (let sent = 0; sent < 3 * LIMIT; sent += 64 * 1024) yield Buffer.from(jsonl(64 * 1024).slice(0, 64 * 1024));
    }
    const error = await t.client.files
      .create({ file: toStreamingFile(chunks(), 'streamed.jsonl'), purpose: 'fine-tune' })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 413, param: 'file' });
    await until(() => storedBlobs().length === 0, 'the refused upload to be removed');
    expect((await t.client.files.list()).data).toEqual([]);
  });

  it('stores a file of exactly the limit when its size is declared up front', async () => {
    const content = jsonl(LIMIT).slice(0, LIMIT);
    const file = await t.client.files.create({ file: new File([content], 'exact.jsonl'), purpose: 'fine-tune' });
    expect(file.bytes).toBe(LIMIT);
    await t.client.files.delete(file.id);
    expect(storedBlobs()).toEqual([]);
  });

  it('stores a streamed file just under the limit byte for byte', async () => {
    const content = jsonl(LIMIT - 2 * line.length);
    async function* chunks() {
      for (let i = 0; i < content.length; i += 10_000) yield Buffer.from(content.slice(i, i + 10_000));
    }
    const file = await t.client.files.create({ file: toStreamingFile(chunks(), 'ok.jsonl'), purpose: 'fine-tune' });
    expect(file.bytes).toBe(content.length);
    expect(await (await t.client.files.content(file.id)).text()).toBe(content);
    expect(storedBlobs()).toEqual([file.id]);
  });
});
