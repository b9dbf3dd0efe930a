import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { JobCreateParams } from 'openai/resources/fine-tuning/jobs/jobs';
import type { BaseModelDetails } from '../models/models.js';
import { connect } from './client.js';
import { followCommand } from './follow-job.js';
import { formatParameters, memoryText } from './model-commands.js';
import { isoTime, printJson, printTable } from './output.js';
import { progressBar } from './progress.js';

interface Common {
  home?: string;
  json?: boolean;
}

const common = (command: Command) =>
  command
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the API objects as JSON');

/** The key-holder's commands: each is one or two calls of the official SDK. */
export function apiCommands(program: Command, models: Command): void {
  const files = program.command('files').description('training files');

  common(files.command('upload').argument('<file>').description('upload a file (purpose fine-tune by default)'))
    .option('--purpose <purpose>', 'fine-tune, batch, assistants, ...', 'fine-tune')
    .action(async (file: string, options: Common & { purpose: 'fine-tune' }) => {
      const client = await connect(options.home);
      const { toStreamingFile } = await import('openai');
      const uploaded = await withProgress(file, (stream) =>
        client.files.create({ file: toStreamingFile(stream, path.basename(file)), purpose: options.purpose }),
      );
      if (options.json) printJson(uploaded);
      else console.log(`${uploaded.id}  ${uploaded.filename}  ${uploaded.bytes} bytes  ${uploaded.status}`);
    });

  common(files.command('list').description('list files'))
    .option('--purpose <purpose>')
    .action(async (options: Common & { purpose?: string }) => {
      const list = [];
      for await (const file of (await connect(options.home)).files.list(options.purpose ? { purpose: options.purpose } : {})) list.push(file);
      if (options.json) return printJson(list);
      printTable(
        list.map((f) => ({ ...f, created: isoTime(f.created_at) })),
        ['id', 'filename', 'purpose', 'bytes', 'status', 'created'],
      );
    });

  common(files.command('delete').argument('<id>').description('delete a file')).action(async (id: string, options: Common) => {
    const deleted = await (await connect(options.home)).files.delete(id);
    if (options.json) printJson(deleted);
    else console.log(`Deleted ${deleted.id}`);
  });

  const jobs = program.command('jobs').description('fine-tuning jobs');

  common(jobs.command('create').description('start a fine-tuning job'))
    .requiredOption('--model <model>', 'base model')
    .requiredOption('--training-file <id>', 'file id of the training data')
    .option('--validation-file <id>', 'file id of the validation data')
    .option('--suffix <suffix>', 'up to 64 characters added to the fine-tuned model name')
    .option('--seed <n>', 'seed for reproducible training', Number)
    .option('--n-epochs <n>', 'epochs, or auto', autoOrNumber)
    .option('--batch-size <n>', 'batch size, or auto', autoOrNumber)
    .option('--learning-rate-multiplier <x>', 'learning rate multiplier, or auto', autoOrNumber)
    .action(
      async (
        options: Common & {
          model: string;
          trainingFile: string;
          validationFile?: string;
          suffix?: string;
          seed?: number;
          nEpochs?: number | 'auto';
          batchSize?: number | 'auto';
          learningRateMultiplier?: number | 'auto';
        },
      ) => {
        const hyperparameters = {
          ...(options.nEpochs !== undefined && { n_epochs: options.nEpochs }),
          ...(options.batchSize !== undefined && { batch_size: options.batchSize }),
          ...(options.learningRateMultiplier !== undefined && { learning_rate_multiplier: options.learningRateMultiplier }),
        };
        const params: JobCreateParams = {
          model: options.model,
          training_file: options.trainingFile,
          ...(options.validationFile && { validation_file: options.validationFile }),
          ...(options.suffix && { suffix: options.suffix }),
          ...(options.seed !== undefined && { seed: options.seed }),
          method: { type: 'supervised', supervised: { hyperparameters } },
        };
        const job = await (await connect(options.home)).fineTuning.jobs.create(params);
        if (options.json) printJson(job);
        else console.log(`${job.id}  ${job.status}  ${job.model}`);
      },
    );

  common(jobs.command('list').description('list jobs, newest first'))
    .option('--limit <n>', 'at most this many', Number, 20)
    .action(async (options: Common & { limit: number }) => {
      const page = await (await connect(options.home)).fineTuning.jobs.list({ limit: options.limit });
      if (options.json) return printJson(page.data);
      printTable(
        page.data.map((j) => ({ ...j, created: isoTime(j.created_at), suffix: (j as { user_provided_suffix?: string }).user_provided_suffix })),
        ['id', 'status', 'model', 'suffix', 'fine_tuned_model', 'created'],
      );
    });

  common(jobs.command('get').argument('<id>').description('show a job')).action(async (id: string, options: Common) => {
    printJson(await (await connect(options.home)).fineTuning.jobs.retrieve(id));
  });

  for (const action of ['cancel', 'pause', 'resume'] as const) {
    common(jobs.command(action).argument('<id>').description(`${action} a job`)).action(async (id: string, options: Common) => {
      const job = await (await connect(options.home)).fineTuning.jobs[action](id);
      if (options.json) printJson(job);
      else console.log(`${job.id}  ${job.status}`);
    });
  }

  common(jobs.command('events').argument('<id>').description("a job's events, oldest first"))
    .option('--limit <n>', 'the newest this many', Number, 100)
    .action(async (id: string, options: Common & { limit: number }) => {
      const events = [];
      for await (const event of (await connect(options.home)).fineTuning.jobs.listEvents(id, { limit: Math.min(options.limit, 100) })) {
        events.push(event);
        if (events.length >= options.limit) break;
      }
      events.reverse();
      if (options.json) return printJson(events);
      for (const e of events) console.log(`${isoTime(e.created_at)}  ${e.level.padEnd(5)}  ${e.message}`);
    });

  followCommand(jobs);

  common(models.command('list').description('list base models and your fine-tunes')).action(async (options: Common) => {
    const list = [];
    for await (const model of (await connect(options.home)).models.list()) list.push(model);
    if (options.json) return printJson(list);
    printTable(
      list.map((m) => ({ ...m, created: isoTime(m.created), ...detailColumns((m as { details?: BaseModelDetails }).details) })),
      ['id', 'owned_by', 'created', 'params', 'context', 'dtype', 'serve', 'lora_train', 'full_train'],
    );
  });

  common(models.command('delete').argument('<model>').description('delete a fine-tuned model you own')).action(
    async (model: string, options: Common) => {
      const deleted = await (await connect(options.home)).models.delete(model);
      if (options.json) printJson(deleted);
      else console.log(`Deleted ${deleted.id}`);
    },
  );
}

/** A base model's arrival facts as table cells: memory with the smallest common GPU it fits. */
const detailColumns = (details: BaseModelDetails | undefined) =>
  details && {
    params: formatParameters(details.parameters ?? undefined),
    context: details.context_length,
    dtype: details.dtype,
    serve: memoryText(details.memory_bytes?.serve),
    lora_train: memoryText(details.memory_bytes?.train_lora),
    full_train: memoryText(details.memory_bytes?.train_full),
  };

function autoOrNumber(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  const number = Number(value);
  if (!Number.isFinite(number)) throw new Error(`expected a number or auto, got "${value}"`);
  return number;
}

/** Sends a file as a stream while a bar shows how much of it has gone. */
async function withProgress<T>(file: string, send: (stream: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
  const bar = await progressBar(`Uploading ${path.basename(file)}`, fs.statSync(file).size);
  async function* counted() {
    let sent = 0;
    for await (const chunk of fs.createReadStream(file)) {
      sent += chunk.length;
      bar.update(sent);
      yield chunk as Uint8Array;
    }
  }
  try {
    return await send(counted());
  } finally {
    bar.stop();
  }
}
