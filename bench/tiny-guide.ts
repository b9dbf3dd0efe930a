/**
 * The guide's job on the built-in tunelab-tiny, timed as a user sees it: the built server as its
 * own process on a fresh home (first start makes the model), the weather dataset uploaded through
 * the official SDK, a job with "auto" hyperparameters (10 epochs), from create to succeeded.
 * Bar (issue 5): under two minutes on this 2-core CPU. 3 runs, each on its own server.
 *
 *   npm run bench:tiny-guide
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startBenchServer, writeResult } from './support.js';

const DATASET = path.resolve(import.meta.dirname, '../examples/data/weather-jokes.jsonl');
const RUNS = 3;

const runs = [];
for (let run = 0; run < RUNS; run++) {
  const started = Date.now();
  const server = await startBenchServer();
  const serverStartS = (Date.now() - started) / 1000;
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: server.apiKey });
  const load = os.loadavg()[0];
  const file = await client.files.create({ file: fs.createReadStream(DATASET), purpose: 'fine-tune' });
  const t0 = Date.now();
  const created = await client.fineTuning.jobs.create({ model: 'tunelab-tiny', training_file: file.id });
  let job = created;
  while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    job = await client.fineTuning.jobs.retrieve(created.id);
  }
  const jobS = (Date.now() - t0) / 1000;
  const csv = (await (await client.files.content(job.result_files[0]!)).text()).trim().split('\n').slice(1);
  const lastEpochLoss = csv.slice(-10).reduce((sum, line) => sum + Number(line.split(',')[1]), 0) / 10;
  runs.push({
    status: job.status,
    n_epochs: job.hyperparameters.n_epochs,
    first_start_s: serverStartS,
    create_to_succeeded_s: jobS,
    last_epoch_mean_loss: Number(lastEpochLoss.toFixed(4)),
    load_average_at_start: Number(load?.toFixed(2)),
  });
  console.log(runs.at(-1));
  await server.stop();
}

const times = runs.map((r) => r.create_to_succeeded_s).sort((a, b) => a - b);
writeResult('tiny-guide', {
  command: 'npm run bench:tiny-guide',
  bar: 'create to succeeded < 120 s, 10 auto epochs, the weather dataset learned (issue 5)',
  median_create_to_succeeded_s: times[Math.floor(times.length / 2)],
  runs,
});
