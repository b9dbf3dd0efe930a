import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_MODEL, type TestServer, startTestServer, validated, weatherJokes } from './support/server.js';

/** Two organizations on one server: each sees only its own, and the other's ids look like nothing at all. */
let t: TestServer;
let alice: OpenAI;
let bob: OpenAI;
let aliceFile: OpenAI.FileObject;
let aliceJob: OpenAI.FineTuning.FineTuningJob;
let aliceModel: string;

beforeAll(async () => {
  t = await startTestServer();
  alice = t.client;
  bob = t.clientFor((await t.server.services.orgs.createKey('bob-corp')).key);
  aliceFile = await alice.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  aliceJob = await alice.fineTuning.jobs.create({ model: BASE_MODEL, training_file: aliceFile.id, suffix: 'mine' });
  aliceModel = `ft:${BASE_MODEL}:personal:mine:${aliceJob.id.slice(-8)}`;
  const adapter = path.join(t.home, 'adapters', aliceJob.id);
  fs.mkdirSync(adapter, { recursive: true });
  await t.server.services.models.registerFineTuned({
    id: aliceModel,
    org_id: aliceJob.organization_id,
    job_id: aliceJob.id,
    base_model: BASE_MODEL,
    kind: 'fine-tune',
    path: adapter,
    created_at: aliceJob.created_at,
  });
});
afterAll(() => t.cleanup());

const status = (promise: Promise<unknown>) =>
  promise.then(
    () => 200,
    (error: InstanceType<typeof OpenAI.APIError>) => error.status,
  );

describe('organizations are walls', () => {
  it("bob's lists hold none of alice's files, jobs or models", async () => {
    expect((await bob.files.list()).data).toEqual([]);
    expect((await bob.fineTuning.jobs.list()).data).toEqual([]);
    const models = (await bob.models.list()).data.map((m) => m.id);
    expect(models).toEqual([BASE_MODEL]);
    expect((await alice.models.list()).data.map((m) => m.id)).toEqual([BASE_MODEL, aliceModel]);
  });

  it("bob gets 404, never 403, for every one of alice's ids", async () => {
    const attempts = {
      'files.retrieve': bob.files.retrieve(aliceFile.id),
      'files.content': bob.files.content(aliceFile.id),
      'files.delete': bob.files.delete(aliceFile.id),
      'jobs.retrieve': bob.fineTuning.jobs.retrieve(aliceJob.id),
      'jobs.cancel': bob.fineTuning.jobs.cancel(aliceJob.id),
      'jobs.pause': bob.fineTuning.jobs.pause(aliceJob.id),
      'jobs.resume': bob.fineTuning.jobs.resume(aliceJob.id),
      'jobs.listEvents': bob.fineTuning.jobs.listEvents(aliceJob.id),
      'jobs.checkpoints': bob.fineTuning.jobs.checkpoints.list(aliceJob.id),
      'models.retrieve': bob.models.retrieve(aliceModel),
      'models.delete': bob.models.delete(aliceModel),
    };
    const statuses = Object.fromEntries(
      await Promise.all(Object.entries(attempts).map(async ([name, attempt]) => [name, await status(attempt)])),
    );
    expect(statuses).toEqual(Object.fromEntries(Object.keys(attempts).map((name) => [name, 404])));
  });

  it("bob cannot train on alice's file, nor page with her ids as cursors", async () => {
    const error = await bob.fineTuning.jobs.create({ model: BASE_MODEL, training_file: aliceFile.id }).catch((e) => e);
    expect(error).toMatchObject({ status: 400, param: 'training_file' });
    expect(await status(bob.fineTuning.jobs.list({ after: aliceJob.id }))).toBe(400);
    expect(await status(bob.files.list({ after: aliceFile.id }))).toBe(400);
  });

  it("everything of alice's is intact after bob's attempts, and only alice deletes her model", async () => {
    expect((await alice.files.retrieve(aliceFile.id)).id).toBe(aliceFile.id);
    expect((await validated(alice, aliceJob.id)).status).toBe('queued');
    expect((await alice.models.delete(aliceModel)).deleted).toBe(true);
    expect(await status(alice.models.retrieve(aliceModel))).toBe(404);
  });
});
