import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { trainingMemory } from '../src/jobs/memory-need.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { weatherFineTune } from './support/fine-tune.js';
import { type TestServer, finished, metricsSteps, startTestServer, untilStep } from './support/server.js';
import { storedFolder } from './support/stored.js';

/**
 * The usual recipe, through the SDK on the built-in tunelab-tiny: a supervised fine-tune on the
 * weather jokes, then DPO from that fine-tune on pairs written for this test (preferred: a joke,
 * non-preferred: a dry forecast), both trained by the real engine.
 */
let t: TestServer;
let client: OpenAI;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  client = t.client;
}, 120_000);
afterAll(() => t.cleanup());

const PREFERENCES = path.resolve(import.meta.dirname, 'fixtures/weather-preferences.jsonl');
/** Pairs on questions neither training file holds: the DPO job's validation file, scored, never trained. */
const HELD_OUT_PAIRS = path.resolve(import.meta.dirname, 'fixtures/weather-preferences-held-out.jsonl');
const SYSTEM = '你是一个会讲笑话的天气助理。';
const HELD_OUT = fs
  .readFileSync(HELD_OUT_PAIRS, 'utf8')
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { input: { messages: Array<{ content: string }> } }).input.messages[1]!.content);
/** Every dry forecast in the pairs states a temperature (度) or a number; no joke does. */
const DRY = /度|\d/;

async function greedy(model: string): Promise<string[]> {
  const answers = [];
  for (const question of HELD_OUT) {
    const reply = await client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: question },
      ],
      temperature: 0,
      max_tokens: 40,
    });
    answers.push(reply.choices[0]!.message.content ?? '');
  }
  return answers;
}

it('trains DPO on top of a supervised fine-tune: reward accuracy 1.0, a margin growing every epoch, held-out pairs preferred', async () => {
  const sft = await weatherFineTune(client, { suffix: 'weather' });

  const pairs = await client.files.create({ file: fs.createReadStream(PREFERENCES), purpose: 'fine-tune' });
  // A file of the other kind for each method is refused at once, naming the file.
  const supervisedOnPairs = await client.fineTuning.jobs.create({ model: sft.fine_tuned_model!, training_file: pairs.id }).catch((e: unknown) => e);
  expect(supervisedOnPairs).toBeInstanceOf(OpenAI.BadRequestError);
  expect(supervisedOnPairs).toMatchObject({ param: 'training_file', message: expect.stringContaining(`${pairs.id} holds preference pairs`) });
  const dpoOnChat = await client.fineTuning.jobs
    .create({ model: sft.fine_tuned_model!, training_file: sft.training_file, method: { type: 'dpo' } })
    .catch((e: unknown) => e);
  expect(dpoOnChat).toMatchObject({ status: 400, param: 'training_file', message: expect.stringContaining(`${sft.training_file} holds chat examples`) });

  const heldOut = await client.files.create({ file: fs.createReadStream(HELD_OUT_PAIRS), purpose: 'fine-tune' });
  const hyperparameters = { beta: 0.1, n_epochs: 6, batch_size: 4, learning_rate_multiplier: 0.2 };
  const created = await client.fineTuning.jobs.create({
    model: sft.fine_tuned_model!,
    training_file: pairs.id,
    validation_file: heldOut.id,
    suffix: 'jokes',
    seed: 1,
    method: { type: 'dpo', dpo: { hyperparameters } },
  });
  expect(created.method).toEqual({ type: 'dpo', dpo: { hyperparameters } });
  const job = await finished(client, created.id, 300_000);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  expect(job.method?.dpo?.hyperparameters).toMatchObject({ ...hyperparameters, full: true });
  // The new model's name is on the lineage's base model; the model says what it was trained from.
  expect(job.fine_tuned_model).toBe(`ft:${TINY_MODEL_NAME}:personal:jokes:${job.id.slice(6, 14)}`);
  expect(await client.models.retrieve(job.fine_tuned_model!)).toMatchObject({ fine_tuned_from: sft.fine_tuned_model });

  // The validation report: both sides trained, the prompt billed once.
  const report = await client.get<{ token_counts: Record<string, { total: number; trained: number; preference: { chosen_trained: number; rejected_trained: number; shared_prompt: number } }> }>(
    `/fine_tuning/jobs/${job.id}/validation_report`,
  );
  const counts = report.token_counts[TINY_MODEL_NAME]!;
  expect(counts.preference.chosen_trained).toBeGreaterThan(0);
  expect(counts.preference.rejected_trained).toBeGreaterThan(0);
  expect(counts.trained).toBe(counts.preference.chosen_trained + counts.preference.rejected_trained);
  expect(counts.preference.shared_prompt).toBeGreaterThan(12 * 10);
  // Trained tokens as billed: each pair's two sequences with their shared prompt once, every epoch.
  expect(job.trained_tokens).toBe(6 * counts.total);

  // The result file: DPO's columns, one row per step (3 steps an epoch).
  const [header, ...lines] = (await (await client.files.content(job.result_files[0]!)).text()).trim().split('\n');
  const columns = header!.split(',');
  expect(columns).toEqual(expect.arrayContaining(['train_loss', 'train_reward_accuracy', 'train_reward_margin', 'train_chosen_reward', 'train_rejected_reward']));
  const rows = lines.map((line) => Object.fromEntries(line.split(',').map((cell, i) => [columns[i]!, Number(cell)])));
  expect(rows).toHaveLength(18);
  const epochs = Array.from({ length: 6 }, (_, e) => rows.slice(3 * e, 3 * e + 3));
  const mean = (epoch: Array<Record<string, number>>, column: string) => epoch.reduce((sum, row) => sum + row[column]!, 0) / epoch.length;
  const margins = epochs.map((epoch) => mean(epoch, 'train_reward_margin'));
  for (let e = 1; e < margins.length; e++) expect(margins[e], `epoch ${e + 1}: ${margins}`).toBeGreaterThan(margins[e - 1]!);
  expect(epochs.at(-1)!.every((row) => row.train_reward_accuracy === 1)).toBe(true);
  expect(rows[0]!.train_loss).toBeCloseTo(Math.log(2), 4); // the reference is the supervised model itself

  // Held-out questions: the DPO model prefers the joke to the dry forecast on every one (the
  // reference, the supervised model, has a margin of 0 by definition). Whether greedy answers move is the next test's:
  // this supervised model answers in jokes already.
  const metrics = await client.get<{ data: Array<Record<string, number>> }>(`/fine_tuning/jobs/${job.id}/metrics`);
  const last = metrics.data.at(-1)!;
  expect(last.full_valid_reward_accuracy).toBe(1);
  expect(last.full_valid_reward_margin).toBeGreaterThan(0);
}, 900_000);

it('moves the held-out answers of a supervised model trained on the dry forecasts to the preferred side', async () => {
  // The supervised step learns the non-preferred answers, so there is a style for DPO to move away from.
  const dry = fs
    .readFileSync(PREFERENCES, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const pair = JSON.parse(line) as { input: { messages: unknown[] }; non_preferred_output: unknown[] };
      return `${JSON.stringify({ messages: [...pair.input.messages, ...pair.non_preferred_output] })}\n`;
    });
  const sftFile = await client.files.create({ file: await toFile(Buffer.from(dry.join('')), 'dry-forecasts.jsonl'), purpose: 'fine-tune' });
  const sft = await finished(client, (await client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: sftFile.id, suffix: 'dry', seed: 1 })).id, 300_000);
  expect(sft.status, JSON.stringify(sft.error)).toBe('succeeded');
  const before = await greedy(sft.fine_tuned_model!);
  expect(before.filter((answer) => DRY.test(answer)), before.join(' | ')).toEqual(before);

  const pairs = await client.files.create({ file: fs.createReadStream(PREFERENCES), purpose: 'fine-tune' });
  const hyperparameters = { beta: 0.1, n_epochs: 6, batch_size: 4, learning_rate_multiplier: 0.4 };
  const job = await finished(
    client,
    (await client.fineTuning.jobs.create({ model: sft.fine_tuned_model!, training_file: pairs.id, suffix: 'jokes', seed: 1, method: { type: 'dpo', dpo: { hyperparameters } } })).id,
    300_000,
  );
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  // Every preferred answer ends with an exclamation and states no figure; the dry ones are the reverse.
  // (A model this small, on twelve pairs, keeps the jokes' shape more than their words.)
  const after = await greedy(job.fine_tuned_model!);
  expect(after.filter((answer) => DRY.test(answer) || !answer.endsWith('!')), after.join(' | ')).toEqual([]);
}, 900_000);

it("continues a LoRA fine-tune's checkpoint with DPO: its adapter, rank and alpha, measured against it", async () => {
  const sft = await weatherFineTune(client, { suffix: 'lora', hyperparameters: { full: false, lora_rank: 4, lora_alpha: 8, n_epochs: 2 } });
  const [checkpoint] = (await client.fineTuning.jobs.checkpoints.list(sft.id)).data.filter((c) => c.step_number === 10);
  const start = checkpoint!.fine_tuned_model_checkpoint;
  const pairs = await client.files.create({ file: fs.createReadStream(PREFERENCES), purpose: 'fine-tune' });
  const dpo = (hyperparameters: object) =>
    client.fineTuning.jobs.create({ model: start, training_file: pairs.id, suffix: 'lora-dpo', seed: 1, method: { type: 'dpo', dpo: { hyperparameters } } });

  // The adapter is continued as it is: another rank, or full fine-tuning, cannot continue it.
  expect(await dpo({ lora_rank: 16 }).catch((e: unknown) => e)).toMatchObject({ status: 400, param: 'method.dpo.hyperparameters.lora_rank' });
  expect(await dpo({ full: true }).catch((e: unknown) => e)).toMatchObject({ status: 400, param: 'method.dpo.hyperparameters.full' });

  const job = await finished(client, (await dpo({ n_epochs: 2, batch_size: 4 })).id, 300_000);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  expect(job.method?.dpo?.hyperparameters).toMatchObject({ full: false, lora_rank: 4, lora_alpha: 8, beta: 0.1 });
  // Its memory need, which decides the workers that may take it, is that of the adapter it continues
  // (rank 4), not of tunelab-tiny's own default (a full fine-tune) nor of the default rank 8.
  const tiny = new BaseModelRegistry(t.server.home.models).get(TINY_MODEL_NAME)!.path;
  const rank4 = trainingMemory(tiny, { full: false, loraRank: 4 });
  expect(rank4.bytes).not.toBe(trainingMemory(tiny, { full: false, loraRank: 8 }).bytes);
  const db = new SqliteDatabase(t.server.home.database, { readonly: true });
  const need = db.prepare('select memory_needed, memory_sharded from jobs where id = ?').get(job.id);
  db.close();
  expect(need).toEqual({ memory_needed: rank4.bytes, memory_sharded: 0 });
  const metrics = await client.get<{ data: Array<Record<string, number>> }>(`/fine_tuning/jobs/${job.id}/metrics`);
  // The reference is the checkpoint itself: the first step starts at log 2, then the pairs are learned.
  expect(metrics.data[0]!.train_loss).toBeCloseTo(Math.log(2), 4);
  expect(metrics.data.at(-1)!.train_reward_margin).toBeGreaterThan(0);
  expect(await client.models.retrieve(job.fine_tuned_model!)).toMatchObject({ fine_tuned_from: start });
  // Served as an adapter over the base model, like any LoRA fine-tune.
  const reply = await client.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: 'user', content: '青岛明天天气怎么样?' }], temperature: 0, max_tokens: 8 });
  expect(reply.choices[0]!.message.content).toBeTruthy();
}, 900_000);

it('pauses a DPO job and resumes it from its checkpoint, its reference read back: no step twice, the same curve as straight through', async () => {
  const pairs = await client.files.create({ file: fs.createReadStream(PREFERENCES), purpose: 'fine-tune' });
  const create = (suffix: string) =>
    client.fineTuning.jobs.create({
      model: TINY_MODEL_NAME,
      training_file: pairs.id,
      suffix,
      seed: 2,
      method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 4, batch_size: 2, learning_rate_multiplier: 0.2 } } },
    });
  const straight = await finished(client, (await create('straight')).id, 300_000);
  expect(straight.status).toBe('succeeded');

  const paused = await create('paused');
  await untilStep(client, paused.id, 3, 120_000);
  expect((await client.fineTuning.jobs.pause(paused.id)).status).toBe('paused');
  await expect
    .poll(async () => (await client.fineTuning.jobs.listEvents(paused.id)).data.some((e) => e.message.startsWith('Checkpoint saved at step')), { timeout: 60_000 })
    .toBe(true);
  // The reference log-probabilities stay beside the arrays (in the folder store) while the job can resume.
  expect(fs.existsSync(path.join(storedFolder(t.home, paused.id, 'train'), 'reference_logps.npy'))).toBe(true);
  expect((await client.fineTuning.jobs.resume(paused.id)).status).toBe('queued');
  const job = await finished(client, paused.id, 300_000);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  expect(await metricsSteps(client, job.id)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
  const curve = async (id: string) => (await client.get<{ data: Array<Record<string, number>> }>(`/fine_tuning/jobs/${id}/metrics`)).data.map((m) => m.train_reward_margin);
  expect(await curve(job.id)).toEqual(await curve(straight.id));
}, 900_000);
