import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_MODEL, type TestServer, startTestServer, validated, weatherJokes } from './support/server.js';

let t: TestServer;
let trainingFile: string;
const jobIds: string[] = [];

beforeAll(async () => {
  t = await startTestServer();
  trainingFile = (await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' })).id;
  for (let i = 0; i < 150; i++) {
    jobIds.push((await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: trainingFile })).id);
  }
});
afterAll(() => t.cleanup());

describe('auto-pagination with for await', () => {
  it('walks 150 jobs newest first, 20 a page, each once', async () => {
    const seen: string[] = [];
    for await (const job of t.client.fineTuning.jobs.list()) seen.push(job.id);
    expect(seen).toEqual([...jobIds].reverse());

    const first = await t.client.fineTuning.jobs.list();
    expect(first.data).toHaveLength(20);
    expect(first.has_more).toBe(true);
    const last = await t.client.fineTuning.jobs.list({ after: jobIds[1]!, limit: 20 });
    expect(last.data.map((j) => j.id)).toEqual([jobIds[0]]);
    expect(last.has_more).toBe(false);
    // Jobs are newest first whatever the client asks: OpenAI's list has no order parameter.
    const ascending = await t.client.fineTuning.jobs.list({ limit: 2, order: 'asc' } as { limit: number });
    expect(ascending.data.map((j) => j.id)).toEqual([jobIds[149], jobIds[148]]);
    const past = await t.client.fineTuning.jobs.list({ after: jobIds[0]!, limit: 20 });
    expect(past.data).toEqual([]);
    expect(past.has_more).toBe(false);
  });

  it('walks 150 events of one job newest first', async () => {
    const jobId = jobIds[0]!;
    await validated(t.client, jobId);
    for (let step = 1; step <= 147; step++) {
      await t.server.services.jobs.appendEvent(jobId, {
        message: `Step ${step}/147: training loss=${(2 / step).toFixed(2)}`,
        type: 'metrics',
        data: { step, total_steps: 147, train_loss: 2 / step },
      });
    }
    const messages: string[] = [];
    for await (const event of t.client.fineTuning.jobs.listEvents(jobId, { limit: 7 })) messages.push(event.message);
    expect(messages).toHaveLength(150);
    expect(messages[0]).toBe('Step 147/147: training loss=0.01');
    expect(messages.at(-1)).toBe(`Created fine-tuning job: ${jobId}`);
    const newest = await t.client.fineTuning.jobs.listEvents(jobId, { limit: 1 });
    expect(newest.data[0]).toMatchObject({ type: 'metrics', data: { step: 147, total_steps: 147 } });
  });

  it("pages a job's checkpoints, newest first, in OpenAI's shape", async () => {
    const jobId = jobIds[1]!;
    for (const step of [10, 20, 30]) {
      await t.server.services.jobs.addCheckpoint(jobId, {
        stepNumber: step,
        model: `ft:${BASE_MODEL}:personal::${jobId.slice(-8)}:ckpt-step-${step}`,
        metrics: { step, train_loss: 1 / step, train_mean_token_accuracy: 0.5 },
      });
    }
    const steps: number[] = [];
    for await (const checkpoint of t.client.fineTuning.jobs.checkpoints.list(jobId, { limit: 2 })) steps.push(checkpoint.step_number);
    expect(steps).toEqual([30, 20, 10]);
    const [newest] = (await t.client.fineTuning.jobs.checkpoints.list(jobId, { limit: 1 })).data;
    expect(newest).toMatchObject({
      object: 'fine_tuning.job.checkpoint',
      fine_tuning_job_id: jobId,
      fine_tuned_model_checkpoint: `ft:${BASE_MODEL}:personal::${jobId.slice(-8)}:ckpt-step-30`,
      step_number: 30,
      metrics: { step: 30, train_loss: 1 / 30, train_mean_token_accuracy: 0.5 },
    });
    expect(newest!.id).toMatch(/^ftckpt_/);
  });

  it('keeps its place when the client deletes each file as it pages', async () => {
    for (let i = 0; i < 5; i++) await t.client.files.create({ file: weatherJokes(), purpose: 'batch' });
    const deleted: string[] = [];
    for await (const file of t.client.files.list({ purpose: 'batch', limit: 2 })) {
      await t.client.files.delete(file.id);
      deleted.push(file.id);
    }
    expect(deleted).toHaveLength(5);
    expect((await t.client.files.list({ purpose: 'batch' })).data).toEqual([]);
  });

  it('pages files in either order', async () => {
    for (let i = 0; i < 4; i++) await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const all = (await t.client.files.list()).data.map((f) => f.id);
    expect(all).toHaveLength(5);
    const desc: string[] = [];
    for await (const f of t.client.files.list({ limit: 2 })) desc.push(f.id);
    expect(desc).toEqual(all);
    const asc: string[] = [];
    for await (const f of t.client.files.list({ limit: 2, order: 'asc' })) asc.push(f.id);
    expect(asc).toEqual([...all].reverse());
    expect(asc[0]).toBe(trainingFile);
  });
});
