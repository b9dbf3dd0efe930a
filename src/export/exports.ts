import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Insertable, Selectable } from 'kysely';
import * as tar from 'tar';
import type { HomeLayout } from '../config.js';
import { runEngineCommand } from '../engine/engine-command.js';
import type { ServePool } from '../engine/serve-pool.js';
import { ServiceError, invalidRequest, noSuch } from '../errors.js';
import type { FileService } from '../files/files.js';
import { newId, unixSeconds } from '../ids.js';
import type { JobService } from '../jobs/jobs.js';
import type { BaseModelRegistry } from '../models/base-models.js';
import { type ModelService, modelNotFound } from '../models/models.js';
import type { ModelExportTable } from '../store/schema.js';
import type { Db } from '../store/store.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { installedConverter } from './converter.js';
import { installedQuantizer, quantize } from './quantizer.js';
import { type ExportSource, writeBaseFolder, writeMergedFolder, writePeftFolder } from './hf-folder.js';
import { type ExportChecks, type ServedGreedy, askTunelab, checkGguf } from './llama-check.js';
import { modelfile, readme } from './ollama.js';
import { type CheckPrompts, GENERAL_PROMPTS, trainingPrompts } from './check-prompts.js';

export const EXPORT_FORMATS = ['peft', 'merged', 'gguf', 'gguf_lora'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];
/** What llama.cpp's converter writes itself, and q4_k_m through llama.cpp's llama-quantize. */
export const GGUF_QUANTIZATIONS = ['f32', 'f16', 'bf16', 'q8_0', 'q4_k_m'] as const;
/** The quantizations llama-quantize makes from the converter's f16, by llama.cpp's name. */
const QUANTIZED_LATER: Record<string, string> = { q4_k_m: 'Q4_K_M' };
/** What llama.cpp's LoRA converter writes; the adapter of a q4_k_m base stays f16. */
const LORA_OUTTYPES: readonly string[] = ['f32', 'f16', 'bf16', 'q8_0'];
export type GgufQuantization = (typeof GGUF_QUANTIZATIONS)[number];

type ExportStatus = ModelExportTable['status'];
type ExportRow = Selectable<ModelExportTable>;
type ExportRowFields = Omit<ExportRow, 'seq'>;

/** The legal moves of an export; anything else is a bug. */
const NEXT: Record<ExportStatus, readonly ExportStatus[]> = {
  queued: ['running', 'failed'],
  running: ['succeeded', 'failed'],
  succeeded: [],
  failed: [],
};

/** Full-precision GGUFs answer token for token as tunelab does; quantized ones must keep the first sentence. */
const EXACT_QUANTIZATIONS: readonly string[] = ['f32', 'f16', 'bf16'];

/** Prompts from the training file the GGUF check answers. */
const CHECKED_PROMPTS = 10;

export interface ModelExport {
  id: string;
  object: 'model.export';
  model: string;
  format: ExportFormat;
  quantization: string | null;
  status: ExportStatus;
  /** 0..1. */
  progress: number;
  stage: string | null;
  /** The archive's file name once made. */
  filename: string;
  bytes: number | null;
  checks: ExportChecks | null;
  error: { code: string; message: string } | null;
  created_at: number;
  finished_at: number | null;
}

export interface ExportRequest {
  model: string;
  format: ExportFormat;
  quantization?: GgufQuantization | undefined;
}

interface Dependencies {
  db: Db;
  models: ModelService;
  baseModels: BaseModelRegistry;
  jobs: JobService;
  files: FileService;
  servePool: ServePool;
  home: HomeLayout;
  log: (message: string, error: unknown) => void;
}

/**
 * Exports of fine-tunes, one at a time in the background (they take the CPU a training job
 * would): a Hugging Face folder (`peft`, `merged`) or a GGUF made by llama.cpp's converter and
 * checked against tunelab's own serving before it is handed over, each packed into a .tar.gz
 * its organization downloads.
 */
export class ExportService {
  private queue: Promise<void> = Promise.resolve();
  private stopping = false;
  private readonly unpacking = new Map<string, Promise<void>>();
  /** Kept GGUF lookups: by organization and model, then by the quantization asked (null: any). */
  private readonly servingGgufs = new Map<string, Map<string | null, Promise<{ path: string; quantization: string } | null>>>();

  constructor(private readonly deps: Dependencies) {
    fs.mkdirSync(deps.home.exports, { recursive: true });
  }

  async create(orgId: string, request: ExportRequest): Promise<ModelExport> {
    const gguf = request.format === 'gguf' || request.format === 'gguf_lora';
    if (!gguf && request.quantization !== undefined) {
      throw invalidRequest(`'quantization' applies to gguf exports only, not ${request.format}.`, 'quantization');
    }
    const source = await this.source(orgId, request.model);
    if ((request.format === 'peft' || request.format === 'gguf_lora') && !source.adapter) {
      const what = source.id === source.baseName ? 'a base model' : 'a full fine-tune';
      throw invalidRequest(`\`${request.model}\` is ${what}: it has no adapter to export as ${request.format}. Export it as merged or gguf.`, 'format');
    }
    if (gguf) {
      installedConverter(this.deps.home.tools);
      if (request.quantization && QUANTIZED_LATER[request.quantization]) installedQuantizer(this.deps.home.tools);
      if (!(await this.prompts(orgId, request.model)).conversations.length) {
        throw invalidRequest(
          `A GGUF export is checked on chat prompts of the job's training file, and the training file of \`${request.model}\` has none.`,
          'model',
        );
      }
    }
    const row: Insertable<ModelExportTable> & ExportRowFields = {
      id: newId('export-'),
      org_id: orgId,
      model: request.model,
      format: request.format,
      quantization: gguf ? (request.quantization ?? 'f16') : null,
      status: 'queued',
      progress: 0,
      stage: null,
      checks: null,
      error_code: null,
      error_message: null,
      bytes: null,
      created_at: unixSeconds(),
      finished_at: null,
    };
    await this.deps.db.insertInto('model_exports').values(row).execute();
    this.enqueue(row.id);
    return toExport({ ...row, seq: 0 });
  }

  async get(orgId: string, id: string): Promise<ModelExport> {
    return toExport(await this.row(orgId, id));
  }

  async list(orgId: string): Promise<ModelExport[]> {
    const rows = await this.deps.db.selectFrom('model_exports').selectAll().where('org_id', '=', orgId).orderBy('seq', 'desc').execute();
    return rows.map(toExport);
  }

  /** The finished export's archive. */
  async archive(orgId: string, id: string): Promise<{ path: string; filename: string; bytes: number }> {
    const row = await this.row(orgId, id);
    if (row.status !== 'succeeded') {
      throw new ServiceError('conflict', `Export ${id} is ${row.status}; its archive can be downloaded once it has succeeded.`, { param: 'export_id' });
    }
    return { path: this.archivePath(row.id), filename: archiveName(row), bytes: Number(row.bytes) };
  }

  async delete(orgId: string, id: string): Promise<{ id: string; object: 'model.export.deleted'; deleted: true }> {
    const row = await this.row(orgId, id);
    if (row.status === 'queued' || row.status === 'running') {
      throw new ServiceError('conflict', `Export ${id} is ${row.status}; delete it once it has finished.`, { param: 'export_id' });
    }
    await this.deps.db.deleteFrom('model_exports').where('id', '=', id).execute();
    this.forgetServingGgufs(orgId, row.model);
    await fsp.rm(this.archivePath(id), { force: true });
    await fsp.rm(this.ggufPath(id), { force: true });
    return { id, object: 'model.export.deleted', deleted: true };
  }

  /**
   * The model's newest succeeded GGUF export (of `quantization`, or any), as a file llama.cpp
   * serves: unpacked from its archive beside it on first use. Asked on every chat request under
   * `auto`, so the answer is kept until an export of the model succeeds or is deleted (a deleted
   * model is refused before its GGUF is looked up).
   */
  servingGguf(orgId: string, model: string, quantization: string | null): Promise<{ path: string; quantization: string } | null> {
    const modelKey = JSON.stringify([orgId, model]);
    let kept = this.servingGgufs.get(modelKey);
    if (!kept) this.servingGgufs.set(modelKey, (kept = new Map()));
    let found = kept.get(quantization);
    if (!found) {
      const asked = this.findServingGguf(orgId, model, quantization);
      kept.set(quantization, asked);
      asked.catch(() => kept.get(quantization) === asked && kept.delete(quantization));
      found = asked;
    }
    return found;
  }

  private async findServingGguf(orgId: string, model: string, quantization: string | null): Promise<{ path: string; quantization: string } | null> {
    let query = this.deps.db
      .selectFrom('model_exports')
      .select(['id', 'quantization'])
      .where('org_id', '=', orgId)
      .where('model', '=', model)
      .where('format', '=', 'gguf')
      .where('status', '=', 'succeeded');
    if (quantization !== null) query = query.where('quantization', '=', quantization);
    const row = await query.orderBy('seq', 'desc').executeTakeFirst();
    if (!row) return null;
    const file = this.ggufPath(row.id);
    if (!fs.existsSync(file)) {
      let unpacking = this.unpacking.get(row.id);
      if (!unpacking) {
        unpacking = this.unpackGguf(row.id, file).finally(() => this.unpacking.delete(row.id));
        this.unpacking.set(row.id, unpacking);
      }
      await unpacking;
    }
    return { path: file, quantization: row.quantization ?? 'f16' };
  }

  /** Drops the kept GGUF lookups of a model whose exports changed. */
  private forgetServingGgufs(orgId: string, model: string): void {
    this.servingGgufs.delete(JSON.stringify([orgId, model]));
  }


  /** After a restart: exports it cut short failed; queued ones run. */
  async recover(): Promise<void> {
    const open = await this.deps.db.selectFrom('model_exports').select(['id', 'status']).where('status', 'in', ['queued', 'running']).orderBy('seq').execute();
    for (const row of open) {
      if (row.status === 'running') await this.fail(row.id, 'interrupted', 'The server restarted while this export ran; create it again.');
      else this.enqueue(row.id);
    }
  }

  /** Lets the export under way finish; queued ones stay queued for the next start. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.queue;
  }

  private enqueue(id: string): void {
    this.queue = this.queue.then(() =>
      this.stopping ? undefined : this.run(id).catch(async (error: unknown) => {
        const known = error instanceof ServiceError;
        if (!known) this.deps.log(`export ${id} failed`, error);
        await this.fail(id, known ? (error.code ?? error.kind) : 'export_failed', (error as Error).message).catch((e: unknown) =>
          this.deps.log(`recording the failure of export ${id} failed`, e),
        );
      }),
    );
  }

  private async run(id: string): Promise<void> {
    const row = await this.deps.db.selectFrom('model_exports').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    await this.move(id, 'running', { stage: 'starting' });
    const source = await this.source(row.org_id, row.model);
    const scratch = await fsp.mkdtemp(path.join(this.deps.home.exports, `${id}-work-`));
    try {
      const out = path.join(scratch, exportName(row.model));
      let checks: ExportChecks | null = null;
      if (row.format === 'peft') await writePeftFolder(source, out);
      else if (row.format === 'merged') {
        await this.progress(id, 0.05, preparing(source));
        await writeMergedFolder(source, out, scratch);
      } else checks = await this.gguf(row, source, out, scratch, row.format === 'gguf_lora');
      await this.progress(id, 0.97, 'archiving');
      const archive = this.archivePath(id);
      // Weights barely compress (a q8_0 GGUF by a few percent), and even gzip's fastest level spends
      // many times a copy's time on them: level 0 stores them, and the download stays a .tar.gz.
      await tar.c({ gzip: { level: 0 }, file: `${archive}.partial`, cwd: scratch, portable: true }, [path.basename(out)]);
      await fsp.rename(`${archive}.partial`, archive);
      const bytes = (await fsp.stat(archive)).size;
      await this.move(id, 'succeeded', { progress: 1, stage: null, bytes, checks: checks && JSON.stringify(checks), finished_at: unixSeconds() });
      this.forgetServingGgufs(row.org_id, row.model);
    } finally {
      await fsp.rm(scratch, { recursive: true, force: true });
    }
  }

  /**
   * A GGUF of the merged fine-tune, or with `lora` the base's GGUF and a GGUF LoRA adapter that
   * llama.cpp applies over it; checked against tunelab's serving, with a Modelfile and a README.
   */
  private async gguf(row: ExportRow, source: ExportSource, out: string, scratch: string, lora: boolean): Promise<ExportChecks> {
    const quantization = row.quantization ?? 'f16';
    const prompts = await this.prompts(row.org_id, row.model);
    // The tokenizer and chat template the fine-tune is served with, which the GGUF must match.
    const tokenizer = ModelTokenizer.load(source.weights);
    // tunelab's side of the check needs no GGUF: the engine answers while llama.cpp's converter works.
    const tunelab = askTunelab({
      tokenizer,
      prompts: prompts.conversations,
      required: EXACT_QUANTIZATIONS.includes(quantization) ? 'tokens' : 'first_sentence',
      served: this.served(source, tokenizer),
    });
    try {
      const { ggufFile, adapterFile } = await this.writeGguf(row, source, out, scratch, lora);
      const total = prompts.conversations.length;
      await this.progress(row.id, 0.6, `checking with llama.cpp: 0 of ${total} prompts`);
      const checks = await checkGguf({
        ggufFile: path.join(out, ggufFile),
        adapterFile: adapterFile && path.join(out, adapterFile),
        tokenizer,
        tunelab,
        onProgress: (done) => void this.progress(row.id, 0.6 + (0.35 * done) / total, `checking with llama.cpp: ${done} of ${total} prompts`),
      });
      const run = { name: exportName(row.model).toLowerCase(), ggufFile, adapterFile, tokenizer, chatTemplate: tokenizer.chatTemplate ?? '', system: prompts.system };
      const equal = `${(checks.equal_token_share * 100).toFixed(1)}%`;
      const asked = prompts.fromTrainingFile ? 'prompts of the training file' : "of tunelab's general prompts (a base model has no training file)";
      const what = lora ? `its base as GGUF (${quantization}) and its adapter as a GGUF LoRA adapter` : `GGUF (${quantization})`;
      const summary =
        `Exported by tunelab from \`${row.model}\` as ${what} with llama.cpp's converter. Checked before ` +
        `handing over: llama.cpp answered ${checks.prompts.length} ${asked} greedily, ${equal} of tunelab's ` +
        `own greedy tokens equal${checks.required === 'first_sentence' ? ', every first sentence the same' : ''}.`;
      await fsp.writeFile(path.join(out, 'Modelfile'), modelfile(run));
      await fsp.writeFile(path.join(out, 'README.md'), readme(run, summary));
      await fsp.writeFile(path.join(out, 'checks.json'), `${JSON.stringify(checks, null, 2)}\n`);
      return checks;
    } finally {
      tunelab.cancel();
    }
  }

  /** The GGUF file (and with `lora` the adapter's) in `out`, by llama.cpp's converter and quantizer; their names. */
  private async writeGguf(row: ExportRow, source: ExportSource, out: string, scratch: string, lora: boolean): Promise<{ ggufFile: string; adapterFile: string | null }> {
    const quantization = row.quantization ?? 'f16';
    const converter = installedConverter(this.deps.home.tools);
    const name = exportName(row.model);
    await fsp.mkdir(out, { recursive: true });
    let model: string;
    let adapterFile: string | null = null;
    if (lora) {
      await this.progress(row.id, 0.05, "converting the adapter to a GGUF LoRA adapter with llama.cpp's converter");
      const peft = path.join(scratch, 'peft-adapter');
      await writePeftFolder(source, peft);
      model = path.join(scratch, 'base-model');
      await writeBaseFolder(source, model);
      const adapterType = LORA_OUTTYPES.includes(quantization) ? quantization : 'f16';
      adapterFile = `${name}-lora-${adapterType}.gguf`;
      await this.engineStep(['gguf-lora', '--adapter', peft, '--base', model, '--out', path.join(out, adapterFile), '--outtype', adapterType, '--converter', converter]);
    } else {
      await this.progress(row.id, 0.05, preparing(source));
      model = path.join(scratch, 'merged-model');
      await writeMergedFolder(source, model, scratch);
    }
    const later = QUANTIZED_LATER[quantization];
    const outtype = later ? 'f16' : quantization;
    await this.progress(row.id, 0.3, `converting to GGUF (${outtype}) with llama.cpp's converter`);
    const ggufFile = lora ? `${exportName(source.baseName)}-${quantization}.gguf` : `${name}-${quantization}.gguf`;
    const converterOut = later ? path.join(scratch, `${name}-f16.gguf`) : path.join(out, ggufFile);
    await this.engineStep(['gguf', '--model', model, '--out', converterOut, '--outtype', outtype, '--converter', converter]);
    if (later) {
      await this.progress(row.id, 0.5, `quantizing to ${quantization} with llama.cpp's llama-quantize`);
      await quantize(installedQuantizer(this.deps.home.tools), converterOut, path.join(out, ggufFile), later);
    }
    return { ggufFile, adapterFile };
  }

  /** An engine command of the export (a converter run); its error names the converter's failure. */
  private async engineStep(args: string[]): Promise<void> {
    const converted = await runEngineCommand(args);
    const error = converted.events.find((event) => event.type === 'error');
    if (converted.code !== 0 || error) {
      const said = String(error?.message ?? converted.stderr.trim().split('\n').at(-1));
      // The converter's imports are installed with it: an environment made again without them lacks them.
      const missing = /No module named '([^']+)'/.exec(said);
      if (missing) {
        throw new ServiceError(
          'server',
          `llama.cpp's converter failed: ${said}. The engine's Python lacks ${missing[1]}, which the converter imports: run \`tunelab setup --export\` on this server.`,
          { code: 'converter_dependency_missing' },
        );
      }
      throw new ServiceError('server', `llama.cpp's converter failed: ${said}`, { code: String(error?.code ?? 'conversion_failed') });
    }
  }

  /** tunelab's own serving of the fine-tune: the engine process chat completions use, greedy. */
  private served(source: ExportSource, tokenizer: ModelTokenizer): ServedGreedy {
    return async (inputIds, { maxTokens, enough, signal }) => {
      const lease = await this.deps.servePool.acquire(source.weights, signal);
      try {
        const ids: number[] = [];
        const request = {
          inputIds,
          adapter: source.adapter,
          maxTokens,
          temperature: 0,
          topP: 1,
          seed: null,
          stopIds: tokenizer.endOfTurnIds,
          presencePenalty: 0,
          frequencyPenalty: 0,
          grammar: null,
          logprobs: null,
        };
        // Leaving the loop early cancels the rest of the generation in the engine.
        for await (const update of lease.process.generate(request, signal)) {
          if (update.type !== 'tokens') continue;
          ids.push(...update.ids);
          if (enough(ids)) break;
        }
        return ids;
      } finally {
        lease.release();
      }
    };
  }

  private async prompts(orgId: string, model: string): Promise<CheckPrompts> {
    const fineTune = await this.fineTuned(orgId, model);
    if (!fineTune) return GENERAL_PROMPTS;
    const job = await this.deps.jobs.get(orgId, fineTune.job_id);
    let bytes: AsyncIterable<Buffer>;
    try {
      bytes = (await this.deps.files.content(orgId, job.training_file)).stream;
    } catch {
      throw invalidRequest(
        `The training file ${job.training_file} of ${job.id} is gone; a GGUF export is checked on prompts from it.`,
        'model',
        'training_file_missing',
      );
    }
    return trainingPrompts(bytes, CHECKED_PROMPTS);
  }

  /** The organization's fine-tune (or checkpoint) `model`; null for a base model of this server. */
  private async fineTuned(orgId: string, model: string) {
    const row = await this.deps.db
      .selectFrom('fine_tuned_models')
      .select(['id', 'job_id', 'base_model'])
      .where('org_id', '=', orgId)
      .where('id', '=', model)
      .executeTakeFirst();
    if (row) return row;
    if (this.deps.baseModels.get(model)) return null;
    throw modelNotFound(model);
  }

  private async source(orgId: string, model: string): Promise<ExportSource> {
    const baseName = (await this.fineTuned(orgId, model))?.base_model ?? model;
    const servable = await this.deps.models.servable(orgId, model);
    const base = this.deps.baseModels.get(baseName);
    return { id: model, weights: servable.weights, adapter: servable.adapter, baseName, baseFolder: base?.path ?? servable.weights };
  }

  private async row(orgId: string, id: string): Promise<ExportRow> {
    const row = await this.deps.db.selectFrom('model_exports').selectAll().where('org_id', '=', orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw noSuch('Export', id, 'export_id');
    return row;
  }

  private archivePath(id: string): string {
    return path.join(this.deps.home.exports, `${id}.tar.gz`);
  }

  private ggufPath(id: string): string {
    return path.join(this.deps.home.exports, `${id}.gguf`);
  }

  private async unpackGguf(id: string, file: string): Promise<void> {
    const scratch = await fsp.mkdtemp(path.join(this.deps.home.exports, `${id}-unpack-`));
    try {
      await tar.x({ file: this.archivePath(id), cwd: scratch, strip: 1, filter: (entry) => entry.endsWith('.gguf') });
      const gguf = (await fsp.readdir(scratch)).find((name) => name.endsWith('.gguf'));
      if (!gguf) throw new Error(`the archive of export ${id} holds no .gguf file`);
      await fsp.rename(path.join(scratch, gguf), file);
    } finally {
      await fsp.rm(scratch, { recursive: true, force: true });
    }
  }

  private async progress(id: string, progress: number, stage: string): Promise<void> {
    await this.deps.db.updateTable('model_exports').set({ progress, stage }).where('id', '=', id).execute();
  }

  private async fail(id: string, code: string, message: string): Promise<void> {
    await this.move(id, 'failed', { error_code: code, error_message: message, stage: null, finished_at: unixSeconds() });
  }

  /** The one door for status changes. */
  private async move(id: string, to: ExportStatus, fields: Partial<Omit<ExportRow, 'id' | 'seq' | 'status'>> = {}): Promise<void> {
    const from = NEXT_FROM[to];
    const result = await this.deps.db
      .updateTable('model_exports')
      .set({ ...fields, status: to })
      .where('id', '=', id)
      .where('status', 'in', from)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) throw new Error(`export ${id} cannot move to ${to}`);
  }
}

/** For each status, the statuses it may be reached from. */
const NEXT_FROM = Object.fromEntries(
  (Object.keys(NEXT) as ExportStatus[]).map((to) => [to, (Object.keys(NEXT) as ExportStatus[]).filter((from) => NEXT[from].includes(to))]),
) as Record<ExportStatus, ExportStatus[]>;

/** The stage of writing the model folder an export starts from. */
const preparing = (source: ExportSource) => (source.adapter ? 'merging' : 'copying the weights');

/** A file-name-safe name for the model: `ft:tunelab-tiny:personal:weather:abc` -> `tunelab-tiny-personal-weather-abc`. */
export const exportName = (model: string) => model.replace(/^ft:/, '').replace(/[^A-Za-z0-9._-]+/g, '-');

const archiveName = (row: Pick<ExportRow, 'model' | 'format' | 'quantization'>) =>
  `${exportName(row.model)}-${row.format}${row.quantization ? `-${row.quantization}` : ''}.tar.gz`;

function toExport(row: ExportRow): ModelExport {
  return {
    id: row.id,
    object: 'model.export',
    model: row.model,
    format: row.format,
    quantization: row.quantization,
    status: row.status,
    progress: Number(row.progress),
    stage: row.stage,
    filename: archiveName(row),
    bytes: row.bytes === null ? null : Number(row.bytes),
    checks: row.checks ? (JSON.parse(row.checks) as ExportChecks) : null,
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    created_at: Number(row.created_at),
    finished_at: row.finished_at === null ? null : Number(row.finished_at),
  };
}
