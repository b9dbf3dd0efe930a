import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import type { DatasetReport } from '../datasets/doctor.js';
import { splitDataset } from '../datasets/split.js';
import { BaseModelRegistry, modelContextLength } from '../models/base-models.js';
import type { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { durationText, printJson } from './output.js';
import { progressBar } from './progress.js';

/** Exit code for a command line that cannot be carried out as written (commander's own usage errors too). */
export const USAGE_ERROR = 2;

export class UsageError extends Error {}

const positiveInteger = (name: string) => (value: string) => {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new InvalidArgumentError(`${name} must be a positive whole number.`);
  return number;
};

/** `tunelab validate` and `tunelab split`: the dataset doctor on local files, before anything is uploaded. */
export function datasetCommands(program: Command): void {
  program
    .command('validate')
    .description('check a fine-tuning file: format errors by example, tokens, epochs, cost, screening (exit 0: can train, 1: cannot)')
    .argument('<file>', 'JSONL file (chat, prompt/completion or preference format)')
    .option('--model <name>', 'base model (registered name or model folder) whose tokenizer and chat template count the tokens')
    .option('--validation-file <file>', 'the validation file to check with it')
    .option('--context <tokens>', 'training context in tokens (default: the model\'s, at most 16,385)', positiveInteger('--context'))
    .option('--no-tokens', 'check and screen only: count no tokens (no cost, no too-long check); faster on large files')
    .option('--show <k>', 'print the first K examples as the model sees them, trained tokens marked', positiveInteger('--show'))
    .option('--home <dir>', 'home folder with the registered models and config.json (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the report as one JSON object')
    .action(async (file: string, options: { model?: string; validationFile?: string; context?: number; show?: number; home?: string; json?: boolean; tokens: boolean }) => {
      const home = resolveHome(options.home);
      if (!options.tokens && (options.model !== undefined || options.show !== undefined)) {
        throw new UsageError('--no-tokens counts no tokens: it cannot be combined with --model or --show.');
      }
      if (options.show !== undefined && options.model === undefined) {
        throw new UsageError('--show renders examples through a model\'s chat template: give the model with --model.');
      }
      for (const input of [file, options.validationFile]) {
        if (input !== undefined && !fs.statSync(input, { throwIfNoEntry: false })?.isFile()) throw new UsageError(`${input}: no such file.`);
      }
      // The doctor's modules (tokenizers, tiktoken's tables) load only for this command.
      const [{ examineFiles, trainingContext }, { loadDatasetSettings }, { renderReport }] = await Promise.all([
        import('../datasets/doctor.js'),
        import('../datasets/settings.js'),
        import('./report-text.js'),
      ]);
      const model = options.model ? await openModel(options.model, home) : null;
      const context = options.context ?? trainingContext(model?.context ?? null);
      const settings = loadDatasetSettings(home);
      const total = fs.statSync(file).size;
      const bar = total > 16 * 1024 * 1024 && !options.json ? await progressBar(`Checking ${path.basename(file)}`, total) : null;
      let report: DatasetReport;
      try {
        report = await examineFiles(
          {
            training: () => fs.createReadStream(file, { highWaterMark: 1 << 20 }),
            validation: options.validationFile ? () => fs.createReadStream(options.validationFile!, { highWaterMark: 1 << 20 }) : null,
          },
          {
            model: model && { name: model.name, tokenizer: model.tokenizer },
            context,
            countTokens: options.tokens,
            prices: settings.prices,
            screening: settings.screening,
            show: options.show ?? 0,
            onProgress: bar ? (bytes) => bar.update(bytes) : undefined,
          },
        );
      } finally {
        bar?.stop();
      }
      const duration = model && options.tokens ? await trainingDuration(home, model.folder, report.charged_tokens) : null;
      if (options.json) printJson(duration && Number.isFinite(duration.seconds) ? { ...report, estimated_duration_seconds: duration.seconds } : report);
      else {
        console.log(renderReport(report, { file, validationFile: options.validationFile, color: process.stdout.isTTY }));
        if (model && options.tokens) console.log(duration?.text ?? 'Training time: run `tunelab models catalog --measure` once to have it estimated.');
      }
      process.exitCode = report.can_train ? 0 : 1;
    });

  program
    .command('split')
    .description('split a JSONL file into shuffled training and validation files (FILE.train.jsonl, FILE.valid.jsonl)')
    .argument('<file>', 'JSONL file')
    .requiredOption('--validation <fraction>', 'share of examples for validation, e.g. 0.1', (value) => {
      const fraction = Number(value);
      if (!(fraction > 0 && fraction < 1)) throw new InvalidArgumentError('--validation must be a fraction between 0 and 1, like 0.1.');
      return fraction;
    })
    .option('--seed <n>', 'shuffle seed (the same seed gives the same split)', (value) => {
      const seed = Number(value);
      if (!Number.isInteger(seed) || seed < 0) throw new InvalidArgumentError('--seed must be a whole number >= 0.');
      return seed;
    }, 0)
    .option('--out-dir <dir>', 'where to write them (default: beside the file)')
    .action((file: string, options: { validation: number; seed: number; outDir?: string }) => {
      if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) throw new UsageError(`${file}: no such file.`);
      const result = splitDataset(file, { fraction: options.validation, seed: options.seed, outDir: options.outDir });
      console.log(`${result.trainingFile}: ${result.training} examples`);
      console.log(`${result.validationFile}: ${result.validation} examples`);
    });
}

/** LoRA training time for the charged tokens on this host, from the engine speed `models catalog --measure` keeps. */
async function trainingDuration(home: string, folder: string, tokens: number): Promise<{ seconds: number; text: string } | null> {
  const { readThroughput, trainingTimeEstimator } = await import('../models/catalog.js');
  const throughput = readThroughput(home);
  if (!throughput) return null;
  const seconds = trainingTimeEstimator(home)(folder, tokens);
  if (seconds === null) return { seconds: NaN, text: "Training time: not estimated, the model's weights cannot be read." };
  return {
    seconds,
    text: `Estimated training time on this host: ${durationText(seconds)} with LoRA (the engine's ${throughput.tokensPerSecond} tokens/s measured on ${throughput.shape}, scaled by parameters)`,
  };
}

/** A base model by registered name, or a model folder given by path. */
async function openModel(nameOrPath: string, home: string): Promise<{ name: string; folder: string; tokenizer: ModelTokenizer; context: number | null }> {
  const registered = new BaseModelRegistry(homeLayout(home).models).get(nameOrPath);
  const folder = registered?.path ?? (fs.existsSync(path.join(nameOrPath, 'tokenizer.json')) ? nameOrPath : null);
  if (!folder || !fs.existsSync(path.join(folder, 'config.json'))) {
    throw new UsageError(`--model ${nameOrPath}: neither a model registered in ${homeLayout(home).models} nor a model folder with config.json and tokenizer.json.`);
  }
  const { ModelTokenizer } = await import('../tokenizer/model-tokenizer.js');
  return { name: registered?.name ?? path.basename(path.resolve(folder)), folder, tokenizer: ModelTokenizer.load(folder), context: modelContextLength(folder) };
}
