import net from 'node:net';
import { Writable } from 'node:stream';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_MODEL, type TestServer, retryingClient, startTestServer, weatherJokes } from './support/server.js';

const rejection = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as InstanceType<typeof OpenAI.APIError>);

/** Every line the server logs, as JSON text. */
const logged: string[] = [];
const logStream = new Writable({
  write(chunk: Buffer, _encoding, callback) {
    logged.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    callback();
  },
});

let t: TestServer;
let trainingFile: string;
beforeAll(async () => {
  t = await startTestServer({ logger: { level: 'info', stream: logStream } });
  trainingFile = (await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' })).id;
});
afterAll(() => t.cleanup());

/** A request written by hand on a socket, for what neither the SDK nor fetch would send. */
function rawHttp(request: string): Promise<string> {
  const { port } = new URL(t.server.baseURL);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.end(request));
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk.toString('utf8')));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

describe('keys that would change an object instead of being stored in it', () => {
  for (const key of ['__proto__', 'constructor', 'prototype']) {
    it(`refuses '${key}' in job metadata with a 400 naming it`, async () => {
      const error = await rejection(
        t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: trainingFile, metadata: { team: 'a', [key]: 'x' } }),
      );
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect(error).toMatchObject({ param: 'metadata', code: 'invalid_key' });
      expect((error?.error as { message: string }).message).toBe(`Invalid key '${key}' in 'metadata': '__proto__', 'constructor' and 'prototype' cannot be used as keys.`);
    });
  }

  it('refuses them at any depth of any body, in a metadata filter, and as an upload form field', async () => {
    const nested = await rejection(
      t.client.chat.completions.create({ model: BASE_MODEL, messages: [{ role: 'user', content: 'hi', ['__proto__' as 'name']: 'x' }] }),
    );
    expect(nested).toMatchObject({ status: 400, param: 'messages.0', code: 'invalid_key' });
    const filter = await rejection(t.client.fineTuning.jobs.list({ metadata: { ['constructor']: 'x' } } as never));
    expect(filter).toMatchObject({ status: 400, param: 'metadata', code: 'invalid_key' });
    for (const [field, param] of [
      ['prototype', 'prototype'],
      ['__proto__', null],
    ]) {
      const form = new FormData();
      form.append('purpose', 'fine-tune');
      form.append(field!, 'x');
      form.append('file', new Blob(['{}\n']), 'a.jsonl');
      const upload = await fetch(`${t.server.baseURL}/files`, { method: 'POST', body: form, headers: { authorization: `Bearer ${t.apiKey}` } });
      expect([field, upload.status]).toEqual([field, 400]);
      expect(((await upload.json()) as { error: unknown }).error).toMatchObject({ type: 'invalid_request_error', param, code: 'invalid_key' });
    }
    // Nothing was created by the refused requests.
    expect((await t.client.fineTuning.jobs.list()).data).toEqual([]);
    expect((await t.client.files.list()).data.map((f) => f.id)).toEqual([trainingFile]);
  });
});

describe('requests Node refuses before the framework sees them', () => {
  it('a URL over 16 KB gets a 431 in OpenAI\'s error shape, which the SDK does not retry', async () => {
    const { client: counting, requests } = retryingClient(t);
    const error = await rejection(counting.files.retrieve(`file-${'a'.repeat(17 * 1024)}`));
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(error?.status).toBe(431);
    expect(error?.error).toEqual({
      message: 'The URL and headers of the request are larger than this server accepts (16 KB): send long values in the body.',
      type: 'invalid_request_error',
      param: null,
      code: 'request_header_fields_too_large',
    });
    expect(requests()).toBe(1);
  });

  it('a request that is not HTTP gets a 400 in the same shape', async () => {
    const answer = await rawHttp('GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ type: 'invalid_request_error', param: null, code: 'invalid_http' });
  });
});

describe('logs', () => {
  it('log URLs without their query string and without anything that looks like a key', async () => {
    const secret = `sk-tl-${'Q'.repeat(40)}`;
    const longToken = 'Z9'.repeat(20);
    await fetch(`${t.server.baseURL}/models?api_key=${secret}`, { headers: { authorization: `Bearer ${t.apiKey}` } });
    await fetch(`${t.server.baseURL}/files/${secret}`, { headers: { authorization: `Bearer ${t.apiKey}` } });
    await fetch(`${t.server.baseURL}/keys/${longToken}/x`);
    await t.client.files.retrieve(trainingFile);
    const requests = logged.map((line) => JSON.parse(line) as { req?: { url: string } }).flatMap((entry) => (entry.req ? [entry.req.url] : []));
    expect(requests).toEqual(
      expect.arrayContaining(['/v1/models?[query omitted]', '/v1/files/[redacted]', '/v1/keys/[redacted]/x', `/v1/files/${trainingFile}`]),
    );
    const all = logged.join('\n');
    expect(all).not.toContain('Q'.repeat(20));
    expect(all).not.toContain(longToken);
    expect(all).not.toContain(t.apiKey.slice(6));
  });
});
