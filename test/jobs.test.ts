import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/finish.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { BASE_MODEL, type TestServer, finished, metricsSteps, startTestServer, untilStep, weatherJokes } from './support/server.js';
import { storedFolder, storedNames, storedObjects } from './support/stored.js';

const MODEL = 'trainable-qwen3';
let t: TestServer;
let client: OpenAI;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1 });
  client = t.client;
  new BaseModelRegistry(t.server.home.models).add(await writeTrainableModelFolder(path.join(t.home, 'sources', MODEL)), MODEL);
});
afterAll(() => t.cleanup());

async function upload() {
  return client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
}

/** A job of `nEpochs` on the weather file, once it has trained `steps` steps. */
async function trainingJob(nEpochs: number, steps: number) {
  const file = await upload();
  const created = await client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, hyperparameters: { n_epochs: nEpochs } });
  await untilStep(client, created.id, steps);
  return created;
}

describe('a job through the engine', () => {
  it('runs to succeeded: hyperparameters resolved, metrics per step, checkpoints as models, a result file', async () => {
    const training = await upload();
    const validation = await upload();
    const created = await client.fineTuning.jobs.create({
      model: MODEL,
      training_file: training.id,
      validation_file: validation.id,
      suffix: 'weather',
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 4 } } },
    });
    const job = await finished(client, created.id);

    expect(job.status).toBe('succeeded');
    expect(job.hyperparameters).toMatchObject({ n_epochs: 4, batch_size: 1, learning_rate_multiplier: 1 });
    expect(job.fine_tuned_model).toBe(`ft:${MODEL}:personal:weather:${job.id.slice(6, 14)}`);
    expect(job.trained_tokens).toBe(4 * 482);
    expect(job.estimated_finish).toBeNull();
    expect(job.finished_at).toBeGreaterThanOrEqual(job.created_at);

    const events = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.reverse();
    const messages = events.filter((e) => e.type === 'message').map((e) => e.message);
    expect(messages).toEqual([
      `Created fine-tuning job: ${job.id}`,
      `Validating training file: ${training.id} and validation file: ${validation.id}`,
      'Files validated, moving job to queued state',
      'Fine-tuning job started',
      `Checkpoint created at step 10 with Snapshot ID: ${job.fine_tuned_model}:ckpt-step-10`,
      `Checkpoint created at step 20 with Snapshot ID: ${job.fine_tuned_model}:ckpt-step-20`,
      `Checkpoint created at step 30 with Snapshot ID: ${job.fine_tuned_model}:ckpt-step-30`,
      `New fine-tuned model created: ${job.fine_tuned_model}`,
      'The job has successfully completed',
    ]);
    const metrics = events.filter((e) => e.type === 'metrics');
    expect(metrics.map((e) => (e.data as { step: number }).step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(metrics[0]!.message).toMatch(/^Step 1\/40: training loss=\d+\.\d{4}$/);
    // Validation every 4 steps and at each epoch's end, joined to that step's event.
    const validated = metrics.filter((e) => 'valid_loss' in (e.data as object));
    expect(validated.map((e) => (e.data as { step: number }).step)).toEqual([4, 8, 10, 12, 16, 20, 24, 28, 30, 32, 36, 40]);
    expect(validated[0]!.message).toMatch(/^Step 4\/40: training loss=\d+\.\d{4}, validation loss=\d+\.\d{4}$/);
    expect(metrics.at(-1)!.data).toHaveProperty('full_valid_loss');

    // The newest three checkpoints are kept, the last being the fine-tuned model itself.
    const checkpoints = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
    expect(checkpoints.map((c) => [c.step_number, c.fine_tuned_model_checkpoint])).toEqual([
      [40, job.fine_tuned_model],
      [30, `${job.fine_tuned_model}:ckpt-step-30`],
      [20, `${job.fine_tuned_model}:ckpt-step-20`],
    ]);
    expect(checkpoints[1]!.metrics).toMatchObject({ step: 30, train_loss: expect.any(Number), valid_loss: expect.any(Number) });
    const models = (await client.models.list()).data.map((m) => m.id);
    expect(models).toEqual(expect.arrayContaining([job.fine_tuned_model, `${job.fine_tuned_model}:ckpt-step-30`, `${job.fine_tuned_model}:ckpt-step-20`]));
    expect(models).not.toContain(`${job.fine_tuned_model}:ckpt-step-10`);
    expect((await client.models.retrieve(job.fine_tuned_model!)).owned_by).toBe(job.organization_id);

    const adapter = storedFolder(t.home, job.id, 'model');
    expect(JSON.parse(fs.readFileSync(path.join(adapter, 'adapter_config.json'), 'utf8'))).toMatchObject({ peft_type: 'LORA', r: 8, base_model_name_or_path: MODEL });
    // Cleaned up just after the job's end commits: the final epoch's checkpoint (the adapter is its weights) and the
    // arrays go; the models are in the store and only there: the scratch folder keeps the engine's log.
    await eventually(() => (storedNames(t.home, job.id).length === 3 ? true : undefined));
    expect(storedNames(t.home, job.id)).toEqual(['model', 'step-20', 'step-30']);
    expect(storedObjects(t.home, job.id).filter((o) => fs.existsSync(path.join(o.folder, 'training_state.pt')))).toEqual([]);
    expect(fs.readdirSync(path.join(t.home, 'work', job.id))).toEqual(['engine.log']);

    expect(job.result_files).toHaveLength(1);
    const resultFile = await client.files.retrieve(job.result_files[0]!);
    expect(resultFile.purpose).toBe('fine-tune-results');
    const csv = (await (await client.files.content(resultFile.id)).text()).trim().split('\n');
    expect(csv[0]).toBe('step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy');
    expect(csv).toHaveLength(41);
    expect(csv[1]).toMatch(/^1,\d+\.\d+,[\d.]+,,$/);
    expect(csv[4]).toMatch(/^4,\d+\.\d+,[\d.]+,\d+\.\d+,[\d.]+$/);

    // Deleting the fine-tune removes its folder; its checkpoints stay usable.
    await client.models.delete(job.fine_tuned_model!);
    expect(fs.existsSync(adapter)).toBe(false);
    expect((await client.models.retrieve(`${job.fine_tuned_model}:ckpt-step-30`)).id).toBe(`${job.fine_tuned_model}:ckpt-step-30`);
  });

  it('cancels a running job: the engine stops and no model is made', async () => {
    const created = await trainingJob(50, 3);
    // Kept current from the speed so far: 500 steps end well after now.
    const running = await client.fineTuning.jobs.retrieve(created.id);
    expect(running.status).toBe('running');
    expect(running.estimated_finish).toBeGreaterThan(Date.now() / 1000 + 5);
    await client.fineTuning.jobs.cancel(created.id);
    const job = await finished(client, created.id);
    expect(job.status).toBe('cancelled');
    expect(job.fine_tuned_model).toBeNull();
    await waitFor(() => !fs.existsSync(path.join(t.home, 'work', job.id, 'engine.pid')));
    expect((await client.models.list()).data.map((m) => m.id).filter((id) => id.includes(job.id.slice(6, 14)))).toEqual([]);
    // Cleaned up after the engine exits, once the cancel is recorded: nothing of it is kept.
    await waitFor(() => storedNames(t.home, job.id).length === 0 && fs.readdirSync(path.join(t.home, 'work', job.id)).join() === 'engine.log');
  });

  it('pauses and resumes: the curve continues where it stopped, no step twice; only the newest checkpoint keeps optimizer state', async () => {
    const created = await trainingJob(3, 12);
    expect((await client.fineTuning.jobs.pause(created.id)).status).toBe('paused');
    await waitFor(async () =>
      (await client.fineTuning.jobs.listEvents(created.id)).data.some((e) => e.message.startsWith('Checkpoint saved at step')),
    );
    const stoppedAt = (await metricsSteps(client, created.id)).length;
    expect((await client.fineTuning.jobs.retrieve(created.id)).status).toBe('paused');

    const holdingState = () => storedObjects(t.home, created.id).filter((o) => fs.existsSync(path.join(o.folder, 'training_state.pt'))).map((o) => o.name);
    expect(holdingState()).toEqual([`step-${stoppedAt}`]);

    expect((await client.fineTuning.jobs.resume(created.id)).status).toBe('queued');
    await untilStep(client, created.id, 22);
    expect(holdingState()).not.toContain('step-10');
    const job = await finished(client, created.id);
    expect(job.status).toBe('succeeded');
    // A finished job resumes no more: its checkpoints are models, without optimizer state.
    expect(storedNames(t.home, created.id)).toContain('step-20');
    // Dropped just after the job's end commits.
    await waitFor(() => holdingState().length === 0);
    expect(await metricsSteps(client, created.id)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    const messages = (await client.fineTuning.jobs.listEvents(created.id, { limit: 100 })).data.map((e) => e.message);
    expect(messages).toContain(`Fine-tuning job resumed from its checkpoint at step ${stoppedAt}`);
  });

  it('is followed by `tunelab jobs follow` until it ends', async () => {
    const file = await upload();
    const created = await client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, hyperparameters: { n_epochs: 2 } });
    const follow = await runCli(['jobs', 'follow', created.id, '--home', t.home]);
    expect(follow.code).toBe(0);
    const lines = follow.stdout.trim().split('\n');
    expect(lines).toContain('Fine-tuning job started');
    expect(lines.filter((line) => line.startsWith('Step '))).toHaveLength(20);
    expect(lines.at(-1)).toMatch(new RegExp(`^${created.id} succeeded: ft:${MODEL}:personal::\\w{8} \\(964 trained tokens\\)$`));
  });

  it('requeues a job whose engine was stopped from outside (a service manager, a Ctrl-C), and finishes it', async () => {
    const created = await trainingJob(2, 3);
    process.kill(enginePid(created.id), 'SIGTERM');
    const job = await finished(client, created.id);
    expect(job.status).toBe('succeeded');
    expect(await metricsSteps(client, job.id)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const warning = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.find((e) => e.level === 'warn');
    expect(warning?.message).toMatch(/^The engine was stopped from outside the server at step \d+; the job continues from there$/);
  });

  it('fails a job whose engine is killed (as the kernel does when memory runs out)', async () => {
    const created = await trainingJob(50, 2);
    process.kill(enginePid(created.id), 'SIGKILL');
    const job = await finished(client, created.id);
    expect(job.status).toBe('failed');
    expect(job.error).toMatchObject({ code: 'engine_failed', message: expect.stringMatching(/^Fine-tuning failed: the engine was killed by SIGKILL \(out of memory\?\)/) });
  });

  it('fails a job whose engine fails, with the cause in the error', async () => {
    // The registry's placeholder model has a tokenizer but no real weights: the engine refuses it.
    const file = await upload();
    const created = await client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id });
    const job = await finished(client, created.id);
    expect(job.status).toBe('failed');
    expect(job.error?.code).toBe('invalid_model');
    expect(job.error?.message).toMatch(/^Fine-tuning failed: weights do not match config\.json: missing model\.embed_tokens\.weight/);
    const last = (await client.fineTuning.jobs.listEvents(job.id)).data[0]!;
    expect([last.level, last.message]).toEqual(['error', job.error?.message]);
  });
});

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const enginePid = (jobId: string) => Number(fs.readFileSync(path.join(t.home, 'work', jobId, 'engine.pid'), 'utf8').split('\n')[0]);

describe('two engine slots', () => {
  it('trains two queued jobs side by side, each engine on its share of the cores', async () => {
    const two = await startTestServer({ engineSlots: 2 });
    try {
      new BaseModelRegistry(two.server.home.models).add(await writeTrainableModelFolder(path.join(two.home, 'sources', MODEL)), MODEL);
      const jobs: OpenAI.FineTuning.FineTuningJob[] = [];
      for (let i = 0; i < 2; i++) {
        const file = await two.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
        jobs.push(await two.client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, hyperparameters: { n_epochs: 5 } }));
      }
      await waitFor(async () => {
        const statuses = await Promise.all(jobs.map(async (job) => (await two.client.fineTuning.jobs.retrieve(job.id)).status));
        return statuses.every((status) => status === 'running');
      });
      // Read while both run: a job's spec goes with its scratch folder when it ends.
      const specs = jobs.map((job) => JSON.parse(fs.readFileSync(path.join(two.home, 'work', job.id, 'spec.json'), 'utf8')));
      for (const spec of specs) expect(spec.threads).toBe(Math.max(1, Math.floor(os.availableParallelism() / 2)));
      for (const job of jobs) expect((await finished(two.client, job.id)).status).toBe('succeeded');
    } finally {
      await two.cleanup();
    }
  });
});
