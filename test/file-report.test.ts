import fs from 'node:fs';
import path from 'node:path';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileReport } from '../src/datasets/file-reports.js';
import { BASE_MODEL, DATASETS, type TestServer, startTestServer, weatherJokes } from './support/server.js';

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer();
});
afterAll(async () => {
  await t?.cleanup();
});

const report = (fileId: string, query: Record<string, string | number> = {}) =>
  t.client.get<FileReport>(`/files/${fileId}/report`, { query });

describe('GET /v1/files/{id}/report', () => {
  it("gives the doctor's report on an uploaded file, counted with a base model, with histograms and examples shown", async () => {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const body = await report(file.id, { model: BASE_MODEL, show: 2 });
    expect(body).toMatchObject({ object: 'file.report', file_id: file.id, model: BASE_MODEL, format: 'chat', n_examples: 10, can_train: true, n_epochs: 10 });
    const own = body.token_counts[BASE_MODEL]!;
    expect(body.billing_tokens).toBe(own.total);
    expect(body.charged_tokens).toBe(own.total * 10);
    const histogram = own.distributions.total_tokens!.histogram;
    expect(histogram.reduce((sum, bin) => sum + bin.count, 0)).toBe(10);
    expect(histogram[0]!.from).toBeLessThanOrEqual(own.distributions.total_tokens!.min);
    expect(histogram.at(-1)!.to).toBeGreaterThanOrEqual(own.distributions.total_tokens!.max);
    expect(body.shown_examples).toHaveLength(2);
    expect(body.shown_examples[0]!.segments.some((segment) => segment.trained)).toBe(true);
    expect(body.shown_examples[0]!.segments.some((segment) => !segment.trained)).toBe(true);
    // Reading a file for its report changes nothing about it: its status is its upload check's.
    await expect.poll(async () => (await t.client.files.retrieve(file.id)).status).toBe('processed');
    await t.client.get(`/files/${file.id}/report`, { query: { model: 'no-such-model' } }).catch(() => {});
    expect(await t.client.files.retrieve(file.id)).toMatchObject({ status: 'processed', status_details: null });
  });

  it("without a model counts OpenAI's tokens only", async () => {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const body = await report(file.id);
    expect(body.model).toBeNull();
    expect(Object.keys(body.token_counts)).toEqual(['cl100k_base']);
    expect(body.billing_tokenizer).toBe('cl100k_base');
    expect(body.shown_examples).toEqual([]);
  });

  it('lists errors by line for a malformed file', async () => {
    const file = await t.client.files.create({
      file: fs.createReadStream(path.join(DATASETS, 'sports-headlines-as-printed.jsonl')),
      purpose: 'fine-tune',
    });
    const body = await report(file.id, { model: BASE_MODEL });
    expect(body.can_train).toBe(false);
    expect(body.errors.filter((error) => error.category === 'invalid_json').map((error) => error.line)).toEqual([1, 2]);
  });

  it("refuses an unknown model, a file of another purpose, a bad show, an unknown file and another organization's file", async () => {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    await expect(report(file.id, { model: 'no-such-model' })).rejects.toMatchObject({ status: 404, code: 'model_not_found', param: 'model' });
    await expect(report(file.id, { show: 100 })).rejects.toMatchObject({ status: 400, param: 'show' });
    const other = await t.client.files.create({ file: await toFile(Buffer.from('{}\n'), 'batch.jsonl'), purpose: 'batch' });
    await expect(report(other.id)).rejects.toMatchObject({ status: 400, code: 'invalid_file_purpose', param: 'file_id' });
    await expect(report('file-nope')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    // Another organization's key cannot read the file through its report.
    const stranger = t.clientFor((await t.server.services.orgs.createKey('stranger-corp')).key);
    await expect(stranger.get(`/files/${file.id}/report`, { query: { model: BASE_MODEL } })).rejects.toMatchObject({ status: 404 });
  });
});
