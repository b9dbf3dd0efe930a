import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, expect, it } from 'vitest';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { CLI } from './support/cli.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { finished, metricsSteps, tempHome, untilStep, weatherJokes } from './support/server.js';

const MODEL = 'trainable-qwen3';
const home = tempHome();
const servers: ChildProcess[] = [];
afterAll(() => {
  for (const server of servers) server.kill('SIGKILL');
  fs.rmSync(home, { recursive: true, force: true });
});

/** `tunelab serve` as its own process, as a person runs it; resolves with a client once it listens. */
async function serve(): Promise<OpenAI> {
  const baseUrlFile = path.join(home, 'base-url');
  fs.rmSync(baseUrlFile, { force: true });
  const server = spawn(process.execPath, [CLI, 'serve', '--home', home, '--port', '0'], {
    env: { ...process.env, TUNELAB_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  servers.push(server);
  for (let waited = 0; !fs.existsSync(baseUrlFile); waited += 50) {
    if (waited > 30_000 || server.exitCode !== null) throw new Error('the server did not start');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const apiKey = fs.readFileSync(path.join(home, 'api-key'), 'utf8').trim();
  return new OpenAI({ baseURL: fs.readFileSync(baseUrlFile, 'utf8').trim(), apiKey, maxRetries: 0 });
}

/** Running, not merely waiting to be reaped (a zombie still answers kill(pid, 0)). */
const alive = (pid: number) => {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
};

it('kill -9 of the server while a job trains: the restarted server continues it from its checkpoint, nothing twice', async () => {
  new BaseModelRegistry(path.join(home, 'models')).add(await writeTrainableModelFolder(path.join(home, 'sources', MODEL)), MODEL);
  let client = await serve();
  const file = await client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const created = await client.fineTuning.jobs.create({ model: MODEL, training_file: file.id, hyperparameters: { n_epochs: 5 } });
  await untilStep(client, created.id, 14);
  const pidFile = path.join(home, 'work', created.id, 'engine.pid');
  const engine = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);

  servers.at(-1)!.kill('SIGKILL');
  client = await serve();
  expect(alive(engine)).toBe(false);

  const job = await finished(client, created.id);
  expect(job.status).toBe('succeeded');
  expect(await metricsSteps(client, job.id)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  const messages = (await client.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.map((e) => e.message).reverse();
  const restart = messages.find((m) => m.startsWith('The server restarted while the job was running'));
  expect(restart).toMatch(/it continues from its checkpoint at step (10|20)$/);
  const checkpointEvents = messages.filter((m) => m.startsWith('Checkpoint created'));
  expect(checkpointEvents).toEqual([10, 20, 30, 40].map((step) => `Checkpoint created at step ${step} with Snapshot ID: ${job.fine_tuned_model}:ckpt-step-${step}`));
  expect(messages.filter((m) => m.startsWith('New fine-tuned model created'))).toHaveLength(1);
  const models = (await client.models.list()).data.map((m) => m.id).filter((id) => id.startsWith('ft:'));
  expect(models.sort()).toEqual([job.fine_tuned_model, `${job.fine_tuned_model}:ckpt-step-30`, `${job.fine_tuned_model}:ckpt-step-40`].sort());
});
