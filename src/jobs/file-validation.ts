import fs from 'node:fs/promises';
import path from 'node:path';
import { ServiceError } from '../errors.js';
import { examineFiles, trainingContext, type DatasetReport } from '../datasets/doctor.js';
import { describeError } from '../datasets/findings.js';
import type { ModelTokenizers } from '../datasets/model-tokenizers.js';
import type { DatasetSettings } from '../datasets/settings.js';
import { type DiskSpace, isDiskFull } from '../files/disk.js';
import type { FileService } from '../files/files.js';
import { type FolderStore, publishWith } from '../files/folder-store.js';
import { randomToken } from '../ids.js';
import { modelContextLength } from '../models/base-models.js';
import type { FineTuningJob, JobService, Method } from './jobs.js';
import type { StoredFolders } from './stored-folders.js';
import { trainingMemory } from './memory-need.js';
import { planTraining } from './training-spec.js';
import { WorkLoop } from './work-loop.js';

export interface JobError {
  code: string;
  message: string;
  param: string | null;
}

/**
 * The `validating_files` step: the dataset doctor runs on the job's files, writes the training
 * arrays into a scratch folder, keeps its report (the files' own status is their upload check's),
 * and moves the job to `queued` (its arrays entering the folder store in the same commit) or fails
 * it with OpenAI's error codes. Jobs are taken one at a
 * time, oldest first; those a restart interrupted are taken again on start.
 */
export class FileValidation {
  private readonly loop = new WorkLoop(
    () => this.drain(),
    (error) => this.log('looking for jobs to validate failed', error),
  );
  /** The job whose files are being read, and how to stop reading them. */
  private current: { jobId: string; abort: AbortController } | null = null;

  constructor(
    private readonly jobs: JobService,
    private readonly files: FileService,
    private readonly settings: DatasetSettings,
    private readonly tokenizers: ModelTokenizers,
    /** This server's scratch folder: the arrays are written there before they enter the store. */
    private readonly workDir: string,
    private readonly store: { folders: FolderStore; stored: StoredFolders },
    private readonly disk: DiskSpace,
    private readonly log: (message: string, error?: unknown) => void,
  ) {}

  /** Looks for work now; if a pass is under way, another follows it. */
  kick(): void {
    this.loop.kick();
  }

  /** A new job is taken at once; a job cancelled while its files are read stops the reading. */
  jobChanged(job: FineTuningJob): void {
    if (job.status === 'validating_files') this.kick();
    else if (this.current?.jobId === job.id) this.current.abort.abort();
  }

  /** Stops taking jobs and abandons the one in hand: it is still validating_files, so the next start takes it again. */
  async stop(): Promise<void> {
    const stopping = this.loop.stop();
    this.current?.abort.abort();
    await stopping;
  }

  private async drain(): Promise<void> {
    for (const job of await this.jobs.withStatus('validating_files')) {
      if (this.loop.stopped) return;
      const abort = new AbortController();
      this.current = { jobId: job.id, abort };
      try {
        await this.validate(job, abort.signal);
      } catch (error) {
        // A job cancelled while its files were read, or a server stopping: nothing to record.
        const abandoned = abort.signal.aborted || (error instanceof ServiceError && error.kind === 'conflict');
        if (!abandoned) {
          this.log(`validating ${job.id} failed`, error);
          const full = isDiskFull(error);
          const message = full
            ? this.disk.fullMessage('writing the training arrays', undefined, this.workDir)
            : `The files could not be validated: ${(error as Error).message}`;
          // The half-written arrays go first: on a full disk, their space lets the failure be recorded.
          await fs.rm(path.join(this.workDir, job.id), { recursive: true, force: true });
          await this.disk
            .persist(() => this.fail(job, { code: full ? 'disk_full' : 'validation_failed', message, param: null }), () => this.loop.stopped)
            .catch((failure) => this.log(`failing ${job.id}`, failure));
        }
      }
      this.current = null;
      // The arrays of a job that will train are in the store by now; the others are not kept.
      await fs.rm(path.join(this.workDir, job.id), { recursive: true, force: true });
    }
  }

  private async validate(job: FineTuningJob, signal: AbortSignal): Promise<void> {
    // A job continuing a fine-tune reads its files with the tokenizer and template of the lineage's base model.
    const start = await this.jobs.startingPoint(job.organization_id, job.model);
    const model = start.root;
    const tokenizer = this.tokenizers.get(model.path);
    const nEpochs = job.hyperparameters.n_epochs;
    const open = (fileId: string) => () => this.files.bytes(job.organization_id, fileId);
    const report = await examineFiles(
      { training: open(job.training_file), validation: job.validation_file ? open(job.validation_file) : null },
      {
        model: { name: model.name, tokenizer },
        context: trainingContext(modelContextLength(model.path)),
        nEpochs: typeof nEpochs === 'number' ? nEpochs : null,
        prices: this.settings.prices,
        screening: this.settings.screening,
        arraysDir: path.join(this.workDir, job.id),
        signal,
      },
    );
    await this.jobs.saveValidationReport(job.id, report);

    const method = (job.method as Method).type;
    const trainingError = fileError(report, 'training_file', method);
    const validationError = report.validation ? fileError(report.validation, 'validation_file', method) : null;
    const error = trainingError ?? validationError;
    if (error) {
      await this.fail(job, error);
      return;
    }
    // What the run will train (a continued adapter keeps its own rank), so the estimate is the run's.
    const { resolved } = planTraining(job.method as Method, start, report);
    const need = trainingMemory(model.path, { full: resolved.full, loraRank: resolved.lora_rank ?? 0 });
    const arraysDir = path.join(this.workDir, job.id);
    const train = await this.store.folders.stage(job.id, path.join(arraysDir, 'train'));
    const valid = report.validation ? await this.store.folders.stage(job.id, path.join(arraysDir, 'valid')) : null;
    const staged = [{ folder: train, name: `train-${randomToken(8)}` }, ...(valid ? [{ folder: valid, name: `valid-${randomToken(8)}` }] : [])];
    await publishWith(this.store.folders, staged, (commit) =>
      this.jobs.move(
        job.id,
        'validating_files',
        'queued',
        { message: 'Files validated, moving job to queued state' },
        // Only a worker with this much memory takes the job (src/jobs/leases.ts).
        { memory_needed: need.bytes, memory_sharded: need.sharded },
        async (trx) => {
          const [trainLocation, validLocation] = await commit();
          await this.store.stored.recordArrays(job.id, { train: trainLocation!, valid: validLocation ?? null }, trx);
        },
      ),
    );
  }

  private async fail(job: FineTuningJob, error: JobError): Promise<void> {
    await this.jobs.move(job.id, 'validating_files', 'failed', { level: 'error', message: error.message }, { error: JSON.stringify(error) });
  }
}

/**
 * The report's verdict on one file as OpenAI words it: `invalid_n_examples`, a screening block, or
 * `invalid_training_file` naming the first error's example, message and field.
 */
export function fileError(report: DatasetReport, param: 'training_file' | 'validation_file', method: Method['type']): JobError | null {
  const first = report.errors[0];
  const total = Object.values(report.error_counts).reduce((sum, n) => sum + (n ?? 0), 0);
  if (first?.category === 'invalid_n_examples') return { code: 'invalid_n_examples', message: first.message, param };
  if (first) {
    const more = total > 1 ? ` (${total - 1} more error${total > 2 ? 's' : ''} in the validation report)` : '';
    return { code: `invalid_${param}`, message: `Invalid file format. ${describeError(first)}${more}`, param };
  }
  if (method === 'supervised' && report.format === 'preference') {
    // Supervised fine-tuning would silently learn just the preferred side.
    return { code: `invalid_${param}`, message: 'Invalid file format. The file holds preference pairs (DPO data); supervised fine-tuning needs chat or prompt/completion examples.', param };
  }
  if (method === 'dpo' && report.format !== 'preference') {
    return { code: `invalid_${param}`, message: 'Invalid file format. DPO trains on preference pairs (input, preferred_output, non_preferred_output); the file holds other examples.', param };
  }
  if (report.screening.blocked) return { code: `invalid_${param}`, message: report.screening.message ?? 'This file failed screening.', param };
  return null;
}
