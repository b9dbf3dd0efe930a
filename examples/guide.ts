/**
 * The fine-tuning guide's steps, written exactly as against OpenAI: the official SDK, reading
 * OPENAI_BASE_URL and OPENAI_API_KEY from the environment. Point them at a tunelab server and
 * run: `npx tsx examples/guide.ts <training.jsonl> <base model>`.
 */
import fs from 'node:fs';
import OpenAI from 'openai';

const [trainingPath, model] = process.argv.slice(2);
if (!trainingPath || !model) {
  console.error('usage: tsx examples/guide.ts <training.jsonl> <base model>');
  process.exit(2);
}

const client = new OpenAI();

// 3. Upload the training file.
const file = await client.files.create({ file: fs.createReadStream(trainingPath), purpose: 'fine-tune' });
console.log(`Uploaded ${file.filename}: ${file.id} (${file.bytes} bytes, ${file.status})`);

// 4. Start the job.
const job = await client.fineTuning.jobs.create({
  model,
  training_file: file.id,
  suffix: 'weather-jokes',
  hyperparameters: { n_epochs: 'auto' },
});
console.log(`Created ${job.id} on ${job.model}: ${job.status}, hyperparameters ${JSON.stringify(job.hyperparameters)}`);

// 5. Follow it: its files are validated, it waits for an engine, then trains; every event as it comes.
const FINISHED = ['succeeded', 'failed', 'cancelled'];
const seen = new Set<string>();
let current = await client.fineTuning.jobs.retrieve(job.id);
for (;;) {
  const fresh = [];
  for await (const event of client.fineTuning.jobs.listEvents(job.id, { limit: 100 })) {
    if (seen.has(event.id)) break;
    seen.add(event.id);
    fresh.push(event);
  }
  for (const event of fresh.reverse()) {
    const step = event.type === 'metrics' ? (event.data as { step: number; total_steps: number }) : null;
    // Every tenth step is enough to watch the loss fall.
    if (!step || step.step % 10 === 0 || step.step === step.total_steps) console.log(`  [${event.level}] ${event.message}`);
  }
  if (FINISHED.includes(current.status)) break;
  await new Promise((resolve) => setTimeout(resolve, 500));
  current = await client.fineTuning.jobs.retrieve(job.id);
}
console.log(`Status: ${current.status}${current.error ? ` (${current.error.code}: ${current.error.message})` : ''}`);
if (current.status !== 'succeeded') process.exit(1);
console.log(`Fine-tuned model: ${current.fine_tuned_model}, ${current.trained_tokens} trained tokens, hyperparameters ${JSON.stringify(current.hyperparameters)}`);

const checkpoints = await client.fineTuning.jobs.checkpoints.list(job.id);
for (const checkpoint of checkpoints.data) {
  console.log(`  checkpoint at step ${checkpoint.step_number}: ${checkpoint.fine_tuned_model_checkpoint} (loss ${checkpoint.metrics.train_loss?.toFixed(4)})`);
}
const results = await (await client.files.content(current.result_files[0]!)).text();
const rows = results.trim().split('\n');
console.log(`Result file ${current.result_files[0]}: ${rows.length - 1} steps\n  ${rows[0]}\n  ${rows[1]}\n  ...\n  ${rows.at(-1)}`);
