import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { jobFolders } from '../src/jobs/job-folders.js';
import { trainingMemory } from '../src/jobs/memory-need.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { type TestServer, allEvents, finished, metricsSteps, startTestServer, tempHome, untilStep, weatherJokes } from './support/server.js';

/**
 * A server on a host with two GPUs trains each job under torchrun, one process per GPU. The GPUs
 * are a stand-in `nvidia-smi` on the PATH (the engine, finding no CUDA, trains on the CPU with
 * gloo, the same code as nccl), each with a little less memory than full fine-tuning the model
 * needs on one device.
 */
const MODEL = 'trainable-qwen3';
const MiB = 1024 * 1024;
let t: TestServer;
let bin: string;

beforeAll(async () => {
  const home = tempHome();
  const folder = await writeTrainableModelFolder(path.join(home, 'sources', MODEL));
  new BaseModelRegistry(path.join(home, 'models')).add(folder, MODEL);
  const need = trainingMemory(folder, { full: true, loraRank: 0 });
  // Enough for a process's half of the shards and all of what does not split; not for the whole.
  const gpu = Math.ceil((need.bytes - need.sharded / 2) / MiB) + 1;
  expect(gpu * MiB).toBeLessThan(need.bytes);
  bin = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-gpus-'));
  fs.writeFileSync(path.join(bin, 'nvidia-smi'), `#!/bin/sh\necho "Stand-in GPU, ${gpu}"\necho "Stand-in GPU, ${gpu}"\n`, { mode: 0o755 });
  process.env.PATH = `${bin}${path.delimiter}${process.env.PATH}`;
  t = await startTestServer({ home, engineSlots: 1 });
}, 120_000);

afterAll(async () => {
  await t?.cleanup();
  fs.rmSync(bin, { recursive: true, force: true });
});

/** What the job's engine processes said on stderr: each rank of a torchrun group names itself there. */
const engineLog = (jobId: string) => fs.readFileSync(jobFolders(t.server.home.work, jobId).log, 'utf8');

async function train(hyperparameters: object) {
  const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  return t.client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, method: { type: 'supervised', supervised: { hyperparameters } } });
}

it('a full fine-tune too big for one of the GPUs trains sharded across both, each step recorded once', async () => {
  const job = await finished(t.client, (await train({ full: true, n_epochs: 1 })).id, 300_000);
  expect(job.status).toBe('succeeded');
  expect(await metricsSteps(t.client, job.id)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
  expect(engineLog(job.id)).toContain('rank 1 of 2 (gloo, sharded)');
}, 320_000);

it('a DPO job trains across both GPUs', async () => {
  const pairs = await t.client.files.create({ file: fs.createReadStream(path.resolve(import.meta.dirname, 'fixtures/weather-preferences.jsonl')), purpose: 'fine-tune' });
  const created = await t.client.fineTuning.jobs.create({
    model: MODEL,
    training_file: pairs.id,
    method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 1 } } },
  });
  const job = await finished(t.client, created.id, 300_000);
  expect(job.status).toBe('succeeded');
  const steps = await metricsSteps(t.client, job.id);
  expect(steps.length).toBeGreaterThan(0);
  expect(steps).toEqual(Array.from({ length: steps.length }, (_, i) => i + 1));
  expect(engineLog(job.id)).toContain('rank 1 of 2 (gloo, replicated)');
}, 320_000);

it('an engine under torchrun stopped from outside continues from its checkpoint; one cancelled through the API is cancelled', async () => {
  const stopped = await train({ full: false, n_epochs: 2 });
  await untilStep(t.client, stopped.id, 3, 120_000);
  // As a service manager stops it: SIGTERM to the engine's process group, torchrun and its processes alike.
  const [pid] = fs.readFileSync(jobFolders(t.server.home.work, stopped.id).pid, 'utf8').split('\n');
  process.kill(-Number(pid), 'SIGTERM');
  const ended = await finished(t.client, stopped.id, 300_000);
  expect(ended.status).toBe('succeeded');
  const events = await allEvents(t.client, stopped.id);
  expect(events.some((e) => e.message.startsWith('The engine was stopped from outside the server at step'))).toBe(true);
  expect(events.some((e) => e.level === 'error')).toBe(false);
  expect(await metricsSteps(t.client, stopped.id)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));

  const cancelled = await train({ full: false, n_epochs: 2 });
  await untilStep(t.client, cancelled.id, 2, 120_000);
  await t.client.fineTuning.jobs.cancel(cancelled.id);
  expect((await finished(t.client, cancelled.id, 120_000)).status).toBe('cancelled');
}, 600_000);
