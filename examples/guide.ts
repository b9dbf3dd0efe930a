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

// 5. Follow it: the files are validated first, then the job is queued for training (or fails, saying why).
let current = await client.fineTuning.jobs.retrieve(job.id);
while (current.status === 'validating_files') {
  await new Promise((resolve) => setTimeout(resolve, 250));
  current = await client.fineTuning.jobs.retrieve(job.id);
}
console.log(`Status now: ${current.status}${current.error ? ` (${current.error.code}: ${current.error.message})` : ''}`);
const events = [];
for await (const event of client.fineTuning.jobs.listEvents(job.id)) events.push(event);
for (const event of events.reverse()) console.log(`  [${event.level}] ${event.message}`);

const recent = await client.fineTuning.jobs.list({ limit: 3 });
console.log(`Latest jobs: ${recent.data.map((j) => `${j.id} (${j.status})`).join(', ')}`);
