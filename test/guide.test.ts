import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BASE_MODEL, DATASETS, type TestServer, startTestServer, validated, weatherJokes } from './support/server.js';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t.cleanup());

describe("the guide's calls through the official SDK", () => {
  it('uploads, lists, retrieves, downloads and deletes a training file', async () => {
    const bytes = fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'));
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    expect(file).toMatchObject({
      object: 'file',
      filename: 'weather-jokes.jsonl',
      purpose: 'fine-tune',
      bytes: bytes.length,
      status: 'uploaded',
      status_details: null,
      expires_at: null,
    });
    expect(file.id).toMatch(/^file-[A-Za-z0-9]{24}$/);
    expect(Math.abs(file.created_at - Date.now() / 1000)).toBeLessThan(5);

    expect(await t.client.files.retrieve(file.id)).toEqual(file);
    const listed = [];
    for await (const f of t.client.files.list({ purpose: 'fine-tune' })) listed.push(f.id);
    expect(listed).toContain(file.id);

    const content = await t.client.files.content(file.id);
    expect(Buffer.from(await content.arrayBuffer()).equals(bytes)).toBe(true);

    const racing = await Promise.allSettled([t.client.files.delete(file.id), t.client.files.delete(file.id)]);
    expect(racing.filter((r) => r.status === 'fulfilled').map((r) => r.value)).toEqual([{ id: file.id, object: 'file', deleted: true }]);
    expect(racing.filter((r) => r.status === 'rejected').map((r) => (r.reason as { status: number }).status)).toEqual([404]);
    await expect(t.client.files.retrieve(file.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    expect(fs.existsSync(path.join(t.home, 'blobs', file.id))).toBe(false);
  });

  it('sets an expiry when asked, hides the file once it has passed, and then deletes its bytes', async () => {
    const file = await t.client.files.create({
      file: weatherJokes(),
      purpose: 'fine-tune',
      expires_after: { anchor: 'created_at', seconds: 3600 },
    });
    expect(file.expires_at).toBe(file.created_at + 3600);
    expect((await t.client.files.retrieve(file.id)).id).toBe(file.id);
    // The server runs in this process: moving its clock an hour on is enough.
    vi.useFakeTimers({ toFake: ['Date'], now: (file.created_at + 3601) * 1000 });
    try {
      await expect(t.client.files.retrieve(file.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
      expect((await t.client.files.list()).data.map((f) => f.id)).not.toContain(file.id);
      expect(fs.existsSync(path.join(t.home, 'blobs', file.id))).toBe(true);
      await t.server.services.files.deleteExpired();
      expect(fs.existsSync(path.join(t.home, 'blobs', file.id))).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('creates a job with suffix, hyperparameters and a validation file, and shows it as OpenAI does', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const validation = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const job = await t.client.fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      validation_file: validation.id,
      suffix: 'weather-jokes',
      hyperparameters: { n_epochs: 10 },
      metadata: { project: 'guide' },
    });
    expect(job).toMatchObject({
      object: 'fine_tuning.job',
      model: BASE_MODEL,
      status: 'validating_files',
      training_file: training.id,
      validation_file: validation.id,
      fine_tuned_model: null,
      finished_at: null,
      trained_tokens: null,
      error: null,
      result_files: [],
      user_provided_suffix: 'weather-jokes',
      hyperparameters: { n_epochs: 10, batch_size: 'auto', learning_rate_multiplier: 'auto' },
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 10, batch_size: 'auto', learning_rate_multiplier: 'auto' } } },
      metadata: { project: 'guide' },
    });
    expect(job.id).toMatch(/^ftjob-/);
    expect(job.organization_id).toMatch(/^org-/);
    expect(job.seed).toBeGreaterThanOrEqual(0);
    expect(await t.client.fineTuning.jobs.retrieve(job.id)).toEqual(job);

    const events = [];
    for await (const e of t.client.fineTuning.jobs.listEvents(job.id)) events.push(e);
    expect(events.map((e) => e.message)).toEqual([
      `Validating training file: ${training.id} and validation file: ${validation.id}`,
      `Created fine-tuning job: ${job.id}`,
    ]);
    expect(events[0]).toMatchObject({ object: 'fine_tuning.job.event', level: 'info', type: 'message' });

    const checkpoints = await t.client.fineTuning.jobs.checkpoints.list(job.id);
    expect(checkpoints.data).toEqual([]);

    const listed = await t.client.fineTuning.jobs.list({ limit: 5 });
    expect(listed.data[0]!.id).toBe(job.id);
    const filtered = await t.client.fineTuning.jobs.list({ metadata: { project: 'guide' } });
    expect(filtered.data.map((j) => j.id)).toEqual([job.id]);
    expect((await t.client.fineTuning.jobs.list({ metadata: { project: 'other' } })).data).toEqual([]);
  });

  it('takes the method form of hyperparameters and a seed, and echoes them', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const job = await t.client.fineTuning.jobs.create({
      model: BASE_MODEL,
      training_file: training.id,
      seed: 42,
      method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 4, learning_rate_multiplier: 0.5 } } },
    });
    expect(job.seed).toBe(42);
    expect(job.hyperparameters).toEqual({ n_epochs: 'auto', batch_size: 4, learning_rate_multiplier: 0.5 });
    expect(job).toHaveProperty('user_provided_suffix', null);
  });

  it('cancels a job once, then refuses with a 400 the SDK does not retry', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const job = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training.id });
    const cancelled = await t.client.fineTuning.jobs.cancel(job.id);
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.finished_at).not.toBeNull();

    const again = await t.client.fineTuning.jobs.cancel(job.id).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(OpenAI.BadRequestError);
    const error = again as InstanceType<typeof OpenAI.BadRequestError>;
    expect(error.headers.get('x-should-retry')).toBe('false');
    expect(error.message).toContain('cancelled');
    expect(error.param).toBe('fine_tuning_job_id');

    await expect(t.client.fineTuning.jobs.pause(job.id)).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(t.client.fineTuning.jobs.resume(job.id)).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    const newest = await t.client.fineTuning.jobs.listEvents(job.id, { limit: 1 });
    expect(newest.data[0]!.message).toBe('Fine-tuning job cancelled');
  });

  it('pauses a queued job and resumes it to queued; a cancelled job cannot be paused', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    // Validated in the background, then queued: this server trains nothing, so it stays there.
    const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training.id })).id);
    expect(job.status).toBe('queued');
    expect((await t.client.fineTuning.jobs.pause(job.id)).status).toBe('paused');
    expect((await t.client.fineTuning.jobs.resume(job.id)).status).toBe('queued');
    await t.client.fineTuning.jobs.cancel(job.id);
    await expect(t.client.fineTuning.jobs.pause(job.id)).rejects.toThrow(
      `Job ${job.id} is cancelled: only a job that is queued or running can be paused.`,
    );
  });

  it('lists base models and fine-tunes, retrieves and deletes an ft: model by its colon-laden id', async () => {
    const models = [];
    for await (const m of t.client.models.list()) models.push(m);
    expect(models).toContainEqual(expect.objectContaining({ id: BASE_MODEL, object: 'model', owned_by: 'system' }));
    expect(await t.client.models.retrieve(BASE_MODEL)).toMatchObject({ id: BASE_MODEL, owned_by: 'system' });

    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const job = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training.id });
    const adapter = path.join(t.home, 'adapters', job.id);
    fs.mkdirSync(adapter, { recursive: true });
    const id = `ft:${BASE_MODEL}:personal::${job.id.slice(-8)}`;
    await t.server.services.models.registerFineTuned({
      id,
      org_id: job.organization_id,
      job_id: job.id,
      base_model: BASE_MODEL,
      kind: 'fine-tune',
      path: adapter,
      created_at: 1_700_000_000,
    });
    // Ours beside OpenAI's fields: the model its job trained from.
    expect(await t.client.models.retrieve(id)).toEqual({ id, object: 'model', created: 1_700_000_000, owned_by: job.organization_id, fine_tuned_from: BASE_MODEL });
    expect(await t.client.models.delete(id)).toEqual({ id, object: 'model', deleted: true });
    expect(fs.existsSync(adapter)).toBe(false);
    await expect(t.client.models.retrieve(id)).rejects.toMatchObject({ status: 404, code: 'model_not_found' });

    const refused = await t.client.models.delete(BASE_MODEL).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.PermissionDeniedError);
    expect(await t.client.models.retrieve(BASE_MODEL)).toMatchObject({ id: BASE_MODEL });
  });

  it('puts an x-request-id on every response, errors included', async () => {
    const ok = await t.client.models.list().withResponse();
    expect(ok.response.headers.get('x-request-id')).toMatch(/^req_/);
    const failed = await t.client.files.retrieve('file-nope').catch((e: unknown) => e);
    expect((failed as InstanceType<typeof OpenAI.APIError>).requestID).toMatch(/^req_/);
  });
});
