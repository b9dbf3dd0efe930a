import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homeLayout } from '../src/config.js';
import type { DatasetReport } from '../src/datasets/doctor.js';
import { LocalBlobStore } from '../src/files/blob-store.js';
import { FileService } from '../src/files/files.js';
import { LocalFolderStore } from '../src/files/folder-store.js';
import { JobService } from '../src/jobs/jobs.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { ModelService } from '../src/models/models.js';
import { openStore } from '../src/store/store.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { readNpy } from './support/npy.js';
import { storedFolder, storedNames } from './support/stored.js';
import { BASE_MODEL, DATASETS, type TestServer, onPostgres, startTestServer, tempHome, validated, weatherJokes } from './support/server.js';

const chat = (i: number, answer = `Answer ${i}.`) =>
  JSON.stringify({ messages: [{ role: 'system', content: 'Brief.' }, { role: 'user', content: `Question ${i}?` }, { role: 'assistant', content: answer }] });
const upload = (t: TestServer, name: string, lines: string[]) =>
  t.client.files.create({ file: new File([lines.join('\n') + '\n'], name), purpose: 'fine-tune' });

describe('validating_files', () => {
  let t: TestServer;
  beforeAll(async () => {
    const home = tempHome();
    // An operator's blocklist: the doctor reads <home>/config.json.
    fs.writeFileSync(path.join(home, 'config.json'), JSON.stringify({ screening: { blocklist: ['Project Nightingale'] } }));
    t = await startTestServer({ home });
  });
  afterAll(() => t.cleanup());

  it('queues a good job, marks its files processed, and writes the arrays the engine trains on', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const validation = await upload(t, 'valid.jsonl', [chat(1), chat(2)]);
    const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training.id, validation_file: validation.id })).id);
    expect(job.status).toBe('queued');
    expect((await t.client.files.retrieve(training.id)).status).toBe('processed');
    expect((await t.client.files.retrieve(validation.id)).status).toBe('processed');
    const events = (await t.client.fineTuning.jobs.listEvents(job.id)).data.map((event) => event.message);
    expect(events[0]).toBe('Files validated, moving job to queued state');

    // The arrays hold exactly what the chat template and tokenizer make of each example, trained tokens marked.
    // They are in the folder store, with the job's move to queued.
    const train = storedFolder(t.home, job.id, 'train');
    const ids = readNpy(path.join(train, 'input_ids.npy'));
    const mask = readNpy(path.join(train, 'loss_mask.npy'));
    const offsets = readNpy(path.join(train, 'offsets.npy'));
    expect([ids.descr, mask.descr, offsets.descr]).toEqual(['<i4', '|u1', '<i8']);
    expect(offsets.shape).toEqual([11]);
    expect(ids.shape).toEqual([offsets.values[10]]);
    const tokenizer = ModelTokenizer.load(path.join(t.home, 'models', BASE_MODEL));
    const lines = fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'), 'utf8').trim().split('\n');
    lines.forEach((line, n) => {
      const expected = encodeChat(tokenizer, JSON.parse(line).messages);
      const [start, end] = [offsets.values[n]!, offsets.values[n + 1]!];
      expect(ids.values.slice(start, end)).toEqual(expected.ids);
      expect(mask.values.slice(start, end)).toEqual(expected.mask);
    });
    expect(readNpy(path.join(storedFolder(t.home, job.id, 'valid'), 'offsets.npy')).shape).toEqual([3]);

    const report = await t.client.get<DatasetReport>(`/fine_tuning/jobs/${job.id}/validation_report`);
    expect(report).toMatchObject({ object: 'fine_tuning.job.validation_report', fine_tuning_job_id: job.id, can_train: true, n_epochs: 10 });
    expect(report.token_counts[BASE_MODEL]!.trained).toBe(mask.values.filter((bit) => bit === 1).length);
    expect(report.validation).toMatchObject({ n_examples: 2, can_train: true });
  });

  it("fails a job with too few examples in OpenAI's words; the file itself is well formed", async () => {
    const file = await t.client.files.create({ file: fs.createReadStream(path.join(DATASETS, 'marv.jsonl')), purpose: 'fine-tune' });
    const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).id);
    const message = 'Training file has 3 example(s), but must have at least 10 examples';
    expect(job).toMatchObject({ status: 'failed', error: { code: 'invalid_n_examples', param: 'training_file', message } });
    expect(job.finished_at).not.toBeNull();
    expect(await t.client.files.retrieve(file.id)).toMatchObject({ status: 'processed', status_details: null });
    expect((await t.client.fineTuning.jobs.listEvents(job.id)).data[0]).toMatchObject({ level: 'error', message });
    expect(storedNames(t.home, job.id)).toEqual([]);
    expect(fs.existsSync(path.join(t.home, 'work', 'validation', job.id))).toBe(false);
  });

  it('refuses a job on a bad validation file at create, naming it and the example', async () => {
    const training = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const validation = await upload(t, 'valid.jsonl', [chat(1), '{"messages": [{"role": "user", "content": "Hi"}]}']);
    const reason = 'Invalid file format. Line 2, field "messages": The example has no assistant message';
    await expect(t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: training.id, validation_file: validation.id })).rejects.toMatchObject({
      status: 400,
      code: 'invalid_validation_file',
      param: 'validation_file',
      message: expect.stringContaining(reason),
    });
    expect((await t.client.files.retrieve(training.id)).status).toBe('processed');
    expect(await t.client.files.retrieve(validation.id)).toMatchObject({ status: 'error', status_details: expect.stringContaining(reason) });
  });

  it('fails a job whose data hits a blocking screen, with the flagged lines', async () => {
    const lines = Array.from({ length: 12 }, (_, i) => chat(i));
    lines[4] = chat(4, 'It belongs to project nightingale.');
    lines[9] = chat(9, 'Card 5555 5555 5555 4444 on file.');
    const file = await upload(t, 'screened.jsonl', lines);
    const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).id);
    expect(job.status).toBe('failed');
    expect(job.error).toMatchObject({ code: 'invalid_training_file', message: expect.stringMatching(/failed moderation safety checks.*Flagged lines: 5, 10$/) });
  });

  it('refuses preference pairs in a supervised job instead of training on half of each', async () => {
    const pair = (i: number) =>
      JSON.stringify({
        input: { messages: [{ role: 'user', content: `Question ${i}?` }] },
        preferred_output: [{ role: 'assistant', content: `Good ${i}.` }],
        non_preferred_output: [{ role: 'assistant', content: `Bad ${i}.` }],
      });
    const file = await upload(t, 'pairs.jsonl', Array.from({ length: 10 }, (_, i) => pair(i)));
    // Told at create, naming the file: a DPO job trains on them.
    await expect(t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).rejects.toMatchObject({
      status: 400,
      param: 'training_file',
      code: 'invalid_training_file',
      message: expect.stringContaining(`${file.id} holds preference pairs (DPO data)`),
    });
    const dpo = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id, method: { type: 'dpo' } });
    expect((await validated(t.client, dpo.id)).status).toBe('queued');
  });

  it('stops reading the files of a job cancelled during validation', async () => {
    // About 9 MB: the doctor needs about 9 s for it on this machine, the next job's file a fraction of one.
    const big = Array.from({ length: 4000 }, (_, i) => chat(i, `${'今年武汉的冬天冷不冷? It is cold, with wind from the north. '.repeat(30)}${i}`));
    const slow = await upload(t, 'big.jsonl', big);
    const cancelled = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: slow.id });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await t.client.fineTuning.jobs.cancel(cancelled.id)).status).toBe('cancelled');

    const started = Date.now();
    const next = await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: (await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' })).id });
    expect((await validated(t.client, next.id, 10_000)).status).toBe('queued');
    expect(Date.now() - started).toBeLessThan(4_000);
    expect((await t.client.fineTuning.jobs.retrieve(cancelled.id)).status).toBe('cancelled');
    expect(fs.existsSync(path.join(t.home, 'work', 'validation', cancelled.id))).toBe(false);
    expect(storedNames(t.home, cancelled.id)).toEqual([]);
  });

  it('serves the report only to the owner', async () => {
    const job = (await t.client.fineTuning.jobs.list()).data[0]!;
    const { key } = await t.server.services.orgs.createKey('other');
    const other = t.clientFor(key);
    await expect(other.get(`/fine_tuning/jobs/${job.id}/validation_report`)).rejects.toMatchObject({ status: 404 });
    await expect(t.client.get('/fine_tuning/jobs/ftjob-nope/validation_report')).rejects.toMatchObject({ status: 404 });
  });
});

describe.skipIf(onPostgres)('a restart during validation (SQLite: the test writes the job through the store file)', () => {
  it('validates again the jobs a stopped server left in validating_files', async () => {
    const home = tempHome();
    const first = await startTestServer({ home });
    const file = await first.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    const org = await first.server.services.orgs.authenticate(fs.readFileSync(path.join(home, 'api-key'), 'utf8').trim());
    await first.stop();

    // A job written as the API writes it, by a process that died before validating it.
    const layout = homeLayout(home);
    const store = await openStore(layout.database);
    const files = new FileService(store.db, new LocalBlobStore(layout.blobs));
    const baseModels = new BaseModelRegistry(layout.models);
    const jobs = new JobService(store.db, files, baseModels, new ModelService(store.db, baseModels, { folders: new LocalFolderStore(layout.store), fetched: layout.work }));
    const job = await jobs.create(org.id, { model: BASE_MODEL, training_file: file.id });
    await expect(jobs.validationReport(org.id, job.id)).rejects.toMatchObject({ kind: 'not_found', code: 'validation_report_not_ready' });
    await store.close();

    const second = await startTestServer({ home });
    expect(job.status).toBe('validating_files');
    expect((await validated(second.client, job.id)).status).toBe('queued');
    await second.cleanup();
  });
});
