import type { Command } from 'commander';
import { homeLayout, resolveHome } from '../config.js';
import type { ArrivalReport } from '../models/arrival-check.js';
import { BaseModelRegistry } from '../models/base-models.js';
import { durationText, printJson, printTable } from './output.js';
import { progressBar } from './progress.js';

/** `tunelab models add`, `pull` and `catalog`: an administrator's, on the server's own home folder. */
export function baseModelCommands(models: Command): void {
  models
    .command('add')
    .description('register a local model folder (Hugging Face layout) as a base model, then check it')
    .argument('<path>', 'folder with config.json, tokenizer.json and *.safetensors')
    .requiredOption('--name <name>', 'the model name clients will use')
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the arrival report as JSON')
    .action(async (source: string, options: { name: string; home?: string; json?: boolean }) => {
      const { addBaseModel } = await import('../models/model-intake.js');
      const registry = new BaseModelRegistry(homeLayout(resolveHome(options.home)).models);
      console.error(`Checking ${source}: reading its files, rendering its template, loading it in the engine...`);
      const { model, report } = await addBaseModel(registry, source, options.name);
      if (options.json) return printJson({ name: model.name, path: model.path, ...report });
      console.log(`Registered ${model.name} -> ${source}`);
      console.log(describeReport(report));
    });

  models
    .command('pull')
    .description('download a model from the Hugging Face Hub into its cache (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE) and register it')
    .argument('<repo>', 'owner/name or owner/name@revision, e.g. Qwen/Qwen2.5-0.5B-Instruct')
    .option('--name <name>', 'the model name clients will use (default: the repository name in lower case)')
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the result as JSON')
    .action(async (reference: string, options: { name?: string; home?: string; json?: boolean }) => {
      const { pullBaseModel } = await import('../models/model-intake.js');
      const registry = new BaseModelRegistry(homeLayout(resolveHome(options.home)).models);
      // The bar is made once the hub has said how much there is to fetch.
      const shown: { bar?: Awaited<ReturnType<typeof progressBar>>; made?: Promise<void> } = {};
      try {
        const { model, report, pull } = await pullBaseModel(registry, reference, {
          name: options.name,
          onPlan: ({ totalBytes, files }) => {
            if (totalBytes === 0) return console.error('Weights already in the Hugging Face cache: nothing to download.');
            shown.made = progressBar(`Downloading ${files} weight file${files === 1 ? '' : 's'}`, totalBytes).then((bar) => void (shown.bar = bar));
          },
          onProgress: ({ receivedBytes }) => shown.bar?.update(receivedBytes),
        });
        await shown.made;
        shown.bar?.stop();
        shown.bar = undefined;
        if (options.json) return printJson({ name: model.name, path: model.path, repo: pull.repo, commit: pull.commit, downloaded_bytes: pull.downloadedBytes, ...report });
        console.log(`Pulled ${pull.repo}@${pull.commit.slice(0, 10)} (${(pull.downloadedBytes / 1e6).toFixed(1)} MB downloaded) into ${pull.folder}`);
        console.log(`Registered ${model.name}`);
        console.log(describeReport(report));
      } finally {
        shown.bar?.stop();
      }
    });

  models
    .command('catalog')
    .description('the models we recommend: size, licence, and how long this host takes to train 1K tokens with LoRA')
    .option('--measure', "measure the engine's training speed on this host first (about a minute; kept in the home folder)")
    .option('--home <dir>', 'home folder (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the catalogue as JSON')
    .action(async (options: { measure?: boolean; home?: string; json?: boolean }) => {
      const { CATALOG, measureThroughput, readThroughput, secondsPer1kTokens } = await import('../models/catalog.js');
      const home = resolveHome(options.home);
      if (options.measure) console.error("Measuring the engine's LoRA training speed on this host...");
      const throughput = options.measure ? await measureThroughput(home) : readThroughput(home);
      const rows = CATALOG.map((entry) => ({
        ...entry,
        secondsPer1kTokens: throughput ? Number(secondsPer1kTokens(throughput, entry.parameters).toFixed(1)) : null,
      }));
      if (options.json) return printJson({ throughput, models: rows });
      printTable(
        rows.map((row) => ({
          repo: row.repo,
          family: row.family,
          params: formatParameters(row.parameters),
          download: `${(row.downloadBytes / 1e9).toFixed(1)} GB`,
          licence: row.gated ? `${row.licence} (gated)` : row.licence,
          lora_per_1k_tokens: row.secondsPer1kTokens === null ? null : durationText(row.secondsPer1kTokens),
        })),
        ['repo', 'family', 'params', 'download', 'licence', 'lora_per_1k_tokens'],
      );
      console.log(
        throughput
          ? `\nTimes: ${throughput.tokensPerSecond} tokens/s measured on ${throughput.shape} (${throughput.cpu}, ${throughput.cores} cores), scaled by parameters.`
          : '\nNo training speed measured on this host yet: run `tunelab models catalog --measure` for the times.',
      );
      console.log('Pull one with `tunelab models pull <repo>`; a gated one needs its licence accepted on its page and HF_TOKEN set.');
    });
}

/** An arrival report for people: the facts and whether the model fits here. */
export function describeReport(report: ArrivalReport): string {
  const lines = [
    `  ${report.modelType} model, ${formatParameters(report.parameters)} parameters in ${report.dtype}, context ${report.contextLength ?? 'unknown'} tokens`,
    `  memory: serve ${memoryText(report.memory?.serve)}, LoRA training ${memoryText(report.memory?.trainLora)}, full training ${memoryText(report.memory?.trainFull)}; this host has ${gigabytes(report.hostMemoryBytes)}`,
    report.loaded ? '  checked: tokenizer, chat template, and the engine generated from it' : '  checked: tokenizer and chat template; not loaded here (more memory than this host has)',
  ];
  return lines.join('\n');
}

export const formatParameters = (count: number | undefined) =>
  count === undefined ? '?' : count >= 1e9 ? `${(count / 1e9).toFixed(1)}B` : `${(count / 1e6).toFixed(count >= 1e8 ? 0 : 1)}M`;

/** GPU memory sizes sold in numbers, smallest first: what "fits on a GPU of N GB" is measured against. */
const GPU_GIGABYTES = [8, 12, 16, 24, 40, 48, 80, 141];

const gigabytes = (bytes: number) =>
  bytes < 1e9 ? `${Math.max(1, Math.round(bytes / 1e6))} MB` : `${(bytes / 1e9).toFixed(bytes < 1e10 ? 1 : 0)} GB`;

/** "3.1 GB (GPU 8 GB)": the need, and the smallest common GPU it fits in (90% usable). */
export function memoryText(bytes: number | undefined): string {
  if (bytes === undefined) return '?';
  const gpu = GPU_GIGABYTES.find((size) => bytes <= size * 1e9 * 0.9);
  return `${gigabytes(bytes)} (${gpu ? `GPU ${gpu} GB` : 'several GPUs'})`;
}
