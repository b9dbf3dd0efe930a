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
  // Repeatable: the same seed, the same fine-tune.
  seed: 1,
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

// 6. Use the fine-tuned model: questions it was trained on, and the guide's test question it never
// saw, each asked of the base model and of the fine-tune.
type Message = OpenAI.ChatCompletionMessageParam;
const trainedConversations = fs
  .readFileSync(trainingPath, 'utf8')
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { messages: Message[] }).messages);
const system = trainedConversations[0]!.find((m) => m.role === 'system');
const asked: Message[][] = [
  ...trainedConversations.slice(0, 3).map((messages) => messages.slice(0, -1)),
  [...(system ? [system] : []), { role: 'user', content: '今年武汉的冬天冷不冷?' }],
];
const answer = async (modelName: string, messages: Message[]) =>
  (await client.chat.completions.create({ model: modelName, messages, temperature: 0, max_tokens: 60 })).choices[0]!.message.content;
console.log(`\nBase model ${model} and fine-tune ${current.fine_tuned_model}, side by side (temperature 0):`);
for (const messages of asked) {
  console.log(`  Q: ${messages.at(-1)!.content}`);
  console.log(`     base:      ${JSON.stringify(await answer(model, messages))}`);
  console.log(`     fine-tune: ${JSON.stringify(await answer(current.fine_tuned_model!, messages))}`);
}

// Streamed, as a chat UI shows it, with the usage of the request at the end.
process.stdout.write('\nStreaming the fine-tune\'s answer to 今年武汉的冬天冷不冷?\n  ');
const stream = await client.chat.completions.create({
  model: current.fine_tuned_model!,
  messages: asked.at(-1)!,
  stream: true,
  stream_options: { include_usage: true },
  temperature: 0.7,
  seed: 3,
});
for await (const chunk of stream) {
  if (chunk.choices[0]?.delta.content) process.stdout.write(chunk.choices[0].delta.content);
  if (chunk.usage) console.log(`\n  (${chunk.usage.prompt_tokens} prompt + ${chunk.usage.completion_tokens} completion tokens)`);
}
