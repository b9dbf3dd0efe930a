import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { HomeLayout } from '../config.js';
import { enginePython } from '../engine/python.js';
import { type DoneEvent, type EngineEvent, type EvalEvent, EVAL_FIELDS, STEP_FIELDS, type StepEvent, type StepMetrics, type TrainingSpec } from '../engine/protocol.js';
import { type Exit, TrainingProcess, stopOrphan } from '../engine/training-process.js';
import { ServiceError } from '../errors.js';
import { DISK_FULL_WORDS, type DiskSpace, isDiskFull, megabytes } from '../files/disk.js';
import type { FileService } from '../files/files.js';
import { unixSeconds } from '../ids.js';
import type { BaseModelRegistry } from '../models/base-models.js';
import type { ModelService } from '../models/models.js';
import { checkpointModelName, fineTunedModelName } from '../models/names.js';
import { trainingDefaults } from '../models/training-defaults.js';
import type { OrgService } from '../orgs/orgs.js';
import type { Db } from '../store/store.js';
import { type CheckpointSpace, checkpointSpace } from './checkpoint-space.js';
import { learningRate, resolveHyperparameters } from './hyperparameters.js';
import { type FineTuningJob, type JobService, type Method, methodHyperparameters } from './jobs.js';
import { resultsCsv } from './results.js';
import { WorkLoop } from './work-loop.js';
import { isFinished } from './status.js';

export interface RunnerServices {
  db: Db;
  jobs: JobService;
  models: ModelService;
  files: FileService;
  orgs: OrgService;
  baseModels: BaseModelRegistry;
  disk: DiskSpace;
}

export interface RunnerOptions {
  /** Engine processes at once; each trains one job. */
  slots: number;
  log: (message: string, error?: unknown) => void;
}

/** Checkpoints a job keeps, as OpenAI's do: the newest three, the final model among them. */
const KEPT_CHECKPOINTS = 3;
/** How often `estimated_finish` is rewritten while a job runs. */
const ESTIMATE_EVERY_MS = 2000;
/** A stopping server waits this long for engines to save a checkpoint before killing them. */
const SHUTDOWN_GRACE_MS = 15_000;
/** The engine's file in a checkpoint folder that holds the optimizer state (engine/tunelab_engine/checkpoint.py). */
const TRAINING_STATE = 'training_state.pt';
/** Below this much free space over the job's estimate, a job starts with a warning. */
const SPACE_WARNING_RATIO = 1.5;

/** A job refused before it starts, with the code its error carries. */
class StartRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Metrics = Partial<StepMetrics> & { step: number };

/** Why a run failed; a `plain` message is the job's whole message, without the engine's last lines. */
interface JobError {
  code: string;
  message: string;
  plain?: boolean;
}

/** One engine process training one job, and what the runner learned from its events so far. */
interface Run {
  job: FineTuningJob;
  /** Null until it is started (a checkpoint may be recorded first). */
  engine: TrainingProcess | null;
  /** Why the runner is stopping the engine: what it says afterwards is recorded accordingly. */
  stopping: 'cancel' | 'pause' | 'shutdown' | null;
  /** The runner itself is moving the job to its end; its own move is not a person's. */
  finishing: boolean;
  finished: Promise<void>;
  fineTunedModel: string;
  /** What its models are recorded as made from (starting-point.ts: the weights a LoRA adapter sits on, or the lineage's base). */
  baseModel: string;
  /** What its checkpoints take on disk, for the messages of a full disk. */
  space: CheckpointSpace;
  totalSteps: number;
  /** The step this run started from (the checkpoint it resumed, or 0). */
  startStep: number;
  /** The newest metrics event, so an evaluation of its step can join it. */
  lastMetrics: { id: string; data: Metrics } | null;
  lastCheckpointStep: number;
  lastEstimateAt: number;
  error: JobError | null;
  done: DoneEvent | null;
  /** The step the engine saved when it was stopped (`cancelled` event), by the runner or not. */
  stoppedAtStep: number | null;
}

/**
 * The `queued -> running -> succeeded | failed` part of a job's way: takes queued jobs oldest
 * first when an engine slot is free, writes the engine's spec, turns its events into job events,
 * checkpoint models, the fine-tuned model and the result file, and stops it on cancel or pause.
 * A job is moved to `running` by a conditional update, so it never runs twice.
 */
export class JobRunner {
  private readonly runs = new Map<string, Run>();
  private readonly loop = new WorkLoop(
    () => this.schedule(),
    (error) => this.options.log('starting queued jobs failed', error),
  );

  constructor(
    private readonly services: RunnerServices,
    private readonly home: HomeLayout,
    private readonly options: RunnerOptions,
  ) {}

  /**
   * On start: jobs still `running` belonged to a server that died. Their engines are stopped if
   * they outlived it, and the jobs go back to the queue to continue from their last checkpoint.
   * A server with no slots trains nothing and leaves running jobs to the one that does.
   */
  async recover(): Promise<void> {
    if (this.options.slots === 0) return;
    for (const job of await this.services.jobs.withStatus('running')) {
      await stopOrphan(this.pidPath(job.id));
      const checkpoint = await this.resumePoint(job.id, (await this.services.jobs.lastStep(job.id))?.data.step ?? 0);
      await this.services.jobs.move(job.id, 'running', 'queued', {
        message: checkpoint
          ? `The server restarted while the job was running; it continues from its checkpoint at step ${checkpoint.step}`
          : 'The server restarted while the job was running; it starts again',
      });
    }
  }

  /** Looks for queued jobs now; if a look is under way, another follows it. */
  kick(): void {
    this.loop.kick();
  }

  /** Every committed move of every job comes here: queued jobs are taken, cancelled or paused runs stopped. */
  jobChanged(job: FineTuningJob): void {
    const run = this.runs.get(job.id);
    if (run && job.status !== 'running' && !run.stopping && !run.finishing) {
      run.stopping = job.status === 'paused' ? 'pause' : 'cancel';
      run.engine?.stop();
    }
    if (job.status === 'queued') this.kick();
    if (!run && isFinished(job.status) && job.status !== 'succeeded') {
      this.cleanUp(job).catch((error) => this.options.log(`cleaning up after ${job.id}`, error));
    }
  }

  /**
   * Stops taking jobs and asks every engine to save a checkpoint and exit; the jobs stay
   * `running`, so the next start continues them from there.
   */
  async stop(): Promise<void> {
    await this.loop.stop();
    const runs = [...this.runs.values()];
    for (const run of runs) {
      if (!run.stopping) run.stopping = 'shutdown';
      run.engine?.stop();
    }
    const all = Promise.all(runs.map((run) => run.finished));
    const grace = setTimeout(() => runs.forEach((run) => run.engine?.kill()), SHUTDOWN_GRACE_MS);
    await all;
    clearTimeout(grace);
  }

  private async schedule(): Promise<void> {
    while (!this.loop.stopped && this.runs.size < this.options.slots) {
      const next = (await this.services.jobs.withStatus('queued')).find((job) => !this.runs.has(job.id));
      if (!next) return;
      try {
        await this.begin(next);
      } catch (error) {
        const code = error instanceof StartRefused ? error.code : 'engine_start_failed';
        if (!(error instanceof StartRefused)) this.options.log(`starting ${next.id} failed`, error);
        const message = `The job could not be started: ${(error as Error).message}`;
        await this.services.disk
          .persist(
            () => this.services.jobs.move(next.id, 'queued', 'failed', { level: 'error', message }, { error: JSON.stringify({ code, message, param: null }) }),
            () => this.loop.stopped,
          )
          // Cancelled or paused meanwhile: someone else moved it, nothing to do.
          .catch((failure) => {
            if (!(failure instanceof ServiceError && failure.kind === 'conflict')) throw failure;
          });
      }
    }
  }

  /** Resolves the hyperparameters, writes the engine's spec, moves the job to running and starts the engine. */
  private async begin(job: FineTuningJob): Promise<void> {
    // An engine a crashed server left behind while it was pausing or cancelling this job.
    await stopOrphan(this.pidPath(job.id));
    const start = await this.services.jobs.startingPoint(job.organization_id, job.model);
    const model = start.root;
    const method = job.method as Method;
    const report = validationFacts(await this.services.jobs.validationReport(job.organization_id, job.id));
    const defaults = trainingDefaults(model.path);
    const resolved = resolveHyperparameters(methodHyperparameters(method), report.n_examples, defaults, start.adapter);
    const work = this.workDir(job.id);
    const stepsPerEpoch = Math.ceil(report.n_examples / resolved.batch_size);
    const totalSteps = stepsPerEpoch * resolved.n_epochs;
    const last = await this.services.jobs.lastStep(job.id);
    const resumeFrom = await this.resumePoint(job.id, last?.data.step ?? 0);
    const space = checkpointSpace(model.path, {
      full: resolved.full,
      loraRank: resolved.lora_rank ?? 0,
      nEpochs: resolved.n_epochs,
      keptCheckpoints: KEPT_CHECKPOINTS,
    });
    const spaceWarning = await this.checkSpace(space, resumeFrom !== null);

    // A resumed run keeps the spec it started with (same schedule, same curve), from its checkpoint.
    const written = resumeFrom && fs.existsSync(this.specPath(job.id)) ? JSON.parse(fs.readFileSync(this.specPath(job.id), 'utf8')) : null;
    const valid = fs.existsSync(path.join(work, 'valid')) ? path.join(work, 'valid') : null;
    const spec: TrainingSpec = written ?? {
      // The model's own engine settings first: the fields below are the runner's to set.
      ...defaults.engine,
      model: start.weights,
      base_model_name: start.weightsModel,
      init_adapter: start.adapter?.path ?? null,
      method: method.type,
      ...(resolved.beta === undefined ? {} : { dpo: { beta: resolved.beta } }),
      train_data: path.join(work, 'train'),
      valid_data: valid,
      output_dir: path.join(this.home.adapters, job.id),
      work_dir: work,
      training: resolved.full ? 'full' : 'lora',
      ...(resolved.full ? {} : { lora: { rank: resolved.lora_rank, alpha: resolved.lora_alpha } }),
      n_epochs: resolved.n_epochs,
      batch_size: resolved.batch_size,
      learning_rate: learningRate(resolved, defaults),
      seq_len: sequenceLength(report, model.name),
      warmup_steps: Math.ceil(defaults.warmup_ratio * totalSteps),
      lr_schedule: defaults.lr_schedule,
      seed: job.seed,
      // About ten validation points along the curve, and one at each epoch's end.
      eval_every: valid ? Math.max(1, Math.floor(totalSteps / 10)) : 0,
      // Engines side by side share the cores rather than each taking all of them.
      ...(this.options.slots > 1 ? { threads: Math.max(1, Math.floor(os.availableParallelism() / this.options.slots)) } : {}),
    };
    spec.resume_from = resumeFrom?.path ?? null;
    await fsp.writeFile(this.specPath(job.id), `${JSON.stringify(spec, null, 2)}\n`);
    // Found before the job is marked running: a host without torch fails the job from the queue.
    enginePython();

    const running = await this.services.jobs.move(
      job.id,
      'queued',
      'running',
      { message: resumeFrom ? `Fine-tuning job resumed from its checkpoint at step ${resumeFrom.step}` : 'Fine-tuning job started' },
      { method: method.type === 'dpo' ? { type: 'dpo', dpo: { hyperparameters: resolved } } : { type: 'supervised', supervised: { hyperparameters: resolved } } },
    );
    const checkpoints = await this.services.jobs.checkpoints(job.id);
    const run: Run = {
      job: running,
      engine: null,
      stopping: null,
      finishing: false,
      finished: Promise.resolve(),
      fineTunedModel: fineTunedModelName({ ...job, model: model.name }, await this.services.orgs.name(job.organization_id)),
      baseModel: resolved.full ? model.name : start.weightsModel,
      space,
      totalSteps,
      startStep: resumeFrom?.step ?? 0,
      lastMetrics: last,
      lastCheckpointStep: Math.max(0, ...checkpoints.map((c) => c.step_number)),
      lastEstimateAt: 0,
      error: null,
      done: null,
      stoppedAtStep: null,
    };
    try {
      if (spaceWarning) await this.services.jobs.appendEvent(job.id, { level: 'warn', message: spaceWarning });
      // An epoch's checkpoint saved as the engine was stopped (or as the server died) and not yet a model.
      if (resumeFrom && resumeFrom.step % stepsPerEpoch === 0) {
        const [atCheckpoint] = await this.services.jobs.metrics(job.id, resumeFrom.step);
        await this.registerCheckpoint(run, resumeFrom.step, resumeFrom.path, atCheckpoint?.data.step === resumeFrom.step ? atCheckpoint.data : undefined);
      }
      run.engine = TrainingProcess.start({ specPath: this.specPath(job.id), logPath: path.join(work, 'engine.log'), pidPath: this.pidPath(job.id) });
    } catch (error) {
      await this.fail(run, { code: 'engine_start_failed', message: `the engine could not be started: ${(error as Error).message}` }, null);
      return;
    }
    this.runs.set(job.id, run);
    run.finished = this.supervise(run, run.engine)
      .catch((error) => this.options.log(`supervising ${job.id} failed`, error))
      .finally(() => {
        this.runs.delete(job.id);
        this.kick();
      });
  }

  private async supervise(run: Run, engine: TrainingProcess): Promise<void> {
    try {
      for await (const event of engine.events()) await this.onEvent(run, event);
    } catch (error) {
      // The record of the run broke (a database error, a full disk): the engine must not train unrecorded.
      engine.kill();
      await engine.exited;
      const step = run.lastMetrics?.data.step ?? run.startStep;
      return this.fail(
        run,
        isDiskFull(error)
          ? this.diskFull(`recording step ${step + 1}`, undefined, this.home.root)
          : { code: 'internal', message: `the server could not record the run: ${(error as Error).message}` },
        null,
      );
    }
    const exit = await engine.exited;
    if (run.stopping === 'shutdown') return;
    if (run.stopping) return this.afterStop(run);
    if (run.done && exit.code === 0) {
      try {
        await this.succeed(run);
      } catch (error) {
        if (error instanceof ServiceError && error.kind === 'conflict') return this.afterStop(run);
        if (!isDiskFull(error)) this.options.log(`finishing ${run.job.id} failed`, error);
        await this.fail(
          run,
          isDiskFull(error)
            ? this.diskFull('writing the result file', undefined, this.home.blobs)
            : { code: 'internal', message: `the fine-tuned model could not be recorded: ${(error as Error).message}` },
          null,
        );
      }
      return;
    }
    // Stopped by a signal from outside (a terminal's Ctrl-C, a service manager): it saved a checkpoint.
    if (run.stoppedAtStep !== null && exit.code === 0) return this.afterStop(run);
    await this.fail(run, this.engineDiskFull(run) ?? run.error, exit);
  }

  /**
   * Before a fresh start: a disk that cannot hold the job's checkpoints and model refuses the job;
   * one that only just can gives a warning (returned). A resumed job's files are mostly there already.
   */
  private async checkSpace(space: CheckpointSpace, resuming: boolean): Promise<string | null> {
    await this.services.disk.setAside();
    if (resuming) return null;
    const free = this.services.disk.freeBytes(this.home.work);
    const need = `its checkpoints and fine-tuned model need about ${megabytes(space.job)}, ${megabytes(free)} free on the disk of ${this.home.root}`;
    if (free < space.job) throw new StartRefused('insufficient_disk_space', `not enough disk space: ${need}`);
    return free < space.job * SPACE_WARNING_RATIO ? `The disk is nearly full: ${need}` : null;
  }

  /** The engine failed for a full disk: while writing a checkpoint (its half-written folder tells the step) or the model. */
  private engineDiskFull(run: Run): JobError | null {
    const said = [run.error?.message ?? '', ...(run.engine?.lastLogLines() ?? [])].join('\n');
    if (!DISK_FULL_WORDS.test(said)) return null;
    const step = halfWrittenCheckpoints(this.workDir(run.job.id)).at(-1)?.step;
    if (step !== undefined) return this.diskFull(`saving the checkpoint at step ${step}`, run.space.checkpoint);
    return this.diskFull(`saving the fine-tuned model at step ${run.lastMetrics?.data.step ?? run.totalSteps}`, run.space.weights);
  }

  private diskFull(doing: string, needed?: number, folder = this.home.work): JobError {
    return { code: 'disk_full', message: this.services.disk.fullMessage(doing, needed, folder), plain: true };
  }

  private async onEvent(run: Run, event: EngineEvent): Promise<void> {
    switch (event.type) {
      case 'started':
        run.totalSteps = Number(event.total_steps);
        return;
      case 'step':
        return this.onStep(run, event);
      case 'eval':
        return this.onEval(run, event);
      case 'checkpoint': {
        const step = Number(event.step);
        // The last epoch's checkpoint becomes the fine-tuned model when the engine is done; a cancelled job makes none.
        if (run.stopping === 'cancel' || step <= run.lastCheckpointStep || step >= run.totalSteps) return;
        return this.registerCheckpoint(run, step, String(event.path), run.lastMetrics?.data.step === step ? run.lastMetrics.data : undefined);
      }
      case 'cancelled':
        run.stoppedAtStep = Number(event.step);
        return;
      case 'done':
        run.done = event;
        return;
      case 'error':
        run.error = { code: String(event.code), message: String(event.message) };
        return;
    }
  }

  private async onStep(run: Run, event: StepEvent): Promise<void> {
    const step = Number(event.step);
    // A run resumed from a checkpoint repeats the steps after it that were already recorded.
    if (run.lastMetrics && step <= run.lastMetrics.data.step) return;
    const data: Metrics = { step, total_steps: Number(event.total_steps) };
    for (const key of STEP_FIELDS) if (key in event) data[key] = event[key];
    const id = await this.services.jobs.recordStep(run.job.id, { message: stepMessage(data), data });
    run.lastMetrics = { id, data };
    // From the engine's own clock, so a backlog of events here does not skew it.
    const now = typeof event.time === 'number' ? event.time * 1000 : Date.now();
    const elapsed = Number(event.elapsed_s);
    if (run.stopping === null && now - run.lastEstimateAt >= ESTIMATE_EVERY_MS && elapsed > 0) {
      run.lastEstimateAt = now;
      const perStep = (elapsed * 1000) / (step - run.startStep);
      await this.services.jobs.setEstimatedFinish(run.job.id, unixSeconds(now + perStep * (run.totalSteps - step)));
    }
  }

  /** An evaluation follows the step it was made at: it joins that step's metrics event. */
  private async onEval(run: Run, event: EvalEvent): Promise<void> {
    if (!run.lastMetrics || run.lastMetrics.data.step !== Number(event.step)) return;
    const data: Metrics = { ...run.lastMetrics.data };
    for (const key of EVAL_FIELDS) if (key in event) data[key] = event[key];
    await this.services.jobs.updateStep(run.job.id, run.lastMetrics.id, { message: stepMessage(data), data });
    run.lastMetrics = { id: run.lastMetrics.id, data };
  }

  /** An epoch's checkpoint becomes a model (`...:ckpt-step-N`); the final one is the fine-tuned model itself. */
  private async registerCheckpoint(run: Run, step: number, folder: string, metrics: Metrics | undefined): Promise<void> {
    if (step <= run.lastCheckpointStep || step >= run.totalSteps) return;
    const { jobs, models } = this.services;
    const name = checkpointModelName(run.fineTunedModel, step);
    const removed = await this.services.db.transaction().execute(async (trx) => {
      await models.registerFineTuned(this.modelRow(run, name, 'checkpoint', folder), trx);
      await jobs.addCheckpoint(run.job.id, { stepNumber: step, model: name, metrics: checkpointMetrics(metrics ?? { step }) }, trx);
      await jobs.appendEvent(run.job.id, { message: `Checkpoint created at step ${step} with Snapshot ID: ${name}` }, trx);
      return this.pruneCheckpoints(run.job.id, trx);
    });
    run.lastCheckpointStep = step;
    await removeFolders(removed);
    // Only the newest checkpoint is resumed from: the others keep their weights and lose the optimizer state.
    await dropTrainingState(checkpointFolders(this.workDir(run.job.id)).slice(0, -1));
  }

  private async succeed(run: Run): Promise<void> {
    const { jobs, models, files } = this.services;
    const job = run.job;
    run.finishing = true;
    const csv = resultsCsv((await jobs.metrics(job.id)).map((m) => m.data));
    const final = run.lastMetrics?.data.step === run.totalSteps ? run.lastMetrics.data : { step: run.totalSteps };
    let removed: string[] = [];
    await jobs.move(
      job.id,
      'running',
      'succeeded',
      [{ message: `New fine-tuned model created: ${run.fineTunedModel}` }, { message: 'The job has successfully completed' }],
      { fine_tuned_model: run.fineTunedModel, trained_tokens: Number(run.done!.trained_tokens) },
      async (trx) => {
        // The result file commits with the job's end: a cancel that wins the race, or a crash, leaves none behind.
        const results = await files.createResult(job.organization_id, 'step_metrics.csv', Buffer.from(csv), trx);
        await trx.updateTable('jobs').set({ result_files: JSON.stringify([results.id]) }).where('id', '=', job.id).execute();
        await models.registerFineTuned(this.modelRow(run, run.fineTunedModel, 'fine-tune', path.join(this.home.adapters, job.id)), trx);
        await jobs.addCheckpoint(job.id, { stepNumber: run.totalSteps, model: run.fineTunedModel, metrics: checkpointMetrics(final) }, trx);
        removed = await this.pruneCheckpoints(job.id, trx);
      },
    );
    await removeFolders(removed);
    await this.cleanUp({ ...job, status: 'succeeded' });
  }

  private async fail(run: Run, error: JobError | null, exit: Exit | null): Promise<void> {
    run.finishing = true;
    // What a failed write left behind goes first: on a full disk, its space lets the failure be recorded.
    await removeFolders(halfWrittenCheckpoints(this.workDir(run.job.id)).map((folder) => folder.path));
    const cause = error
      ? error.message
      : exit?.signal
        ? `the engine was killed by ${exit.signal}${exit.signal === 'SIGKILL' ? ' (out of memory?)' : ''}`
        : `the engine exited with status ${exit?.code ?? 'unknown'} before finishing`;
    const lines = run.engine?.lastLogLines() ?? [];
    const message = error?.plain
      ? error.message
      : `Fine-tuning failed: ${cause}${lines.length ? `\nThe engine's last lines:\n${lines.join('\n')}` : ''}`;
    try {
      // Recorded even on a full disk: the job must not stay running with no engine.
      await this.services.disk.persist(
        () =>
          this.services.jobs.move(run.job.id, 'running', 'failed', { level: 'error', message }, {
            error: JSON.stringify({ code: error?.code ?? 'engine_failed', message, param: null }),
          }),
        () => this.loop.stopped,
      );
    } catch (failure) {
      if (failure instanceof ServiceError && failure.kind === 'conflict') return this.afterStop(run);
      throw failure;
    }
    await this.cleanUp({ ...run.job, status: 'failed' });
  }

  /** After the engine stopped for a cancel, a pause, or a signal from outside. */
  private async afterStop(run: Run): Promise<void> {
    const { jobs } = this.services;
    const job = await jobs.get(run.job.organization_id, run.job.id);
    if (run.error) {
      await jobs.appendEvent(job.id, { level: 'warn', message: `The engine failed while stopping: ${run.error.message}` });
    }
    if (job.status === 'paused' && run.stoppedAtStep !== null) {
      await jobs.appendEvent(job.id, { message: `Checkpoint saved at step ${run.stoppedAtStep}; resuming continues from there` });
    }
    if (job.status === 'running') {
      // Nobody here asked it to stop: the job goes back to the queue and continues from the checkpoint it saved.
      await jobs.move(job.id, 'running', 'queued', {
        level: 'warn',
        message: `The engine was stopped from outside the server at step ${run.stoppedAtStep}; the job continues from there`,
      });
    }
    if (isFinished(job.status)) await this.cleanUp(job);
  }

  /**
   * A finished job keeps its models' folders and its engine log; its training arrays, the
   * checkpoints no model names, and (unless it succeeded) its partial output go.
   */
  private async cleanUp(job: FineTuningJob): Promise<void> {
    const work = this.workDir(job.id);
    const kept = new Set(await this.services.models.folders(job.id));
    const checkpoints = path.join(work, 'checkpoints');
    const stale = fs.existsSync(checkpoints)
      ? fs.readdirSync(checkpoints).map((name) => path.join(checkpoints, name)).filter((folder) => !kept.has(folder))
      : [];
    await removeFolders([path.join(work, 'train'), path.join(work, 'valid'), ...stale]);
    // A finished job is never resumed: its checkpoints are models now, and optimizer state is most of their size.
    await dropTrainingState(checkpointFolders(work));
    if (job.status !== 'succeeded') await removeFolders([path.join(this.home.adapters, job.id)]);
  }

  /** Drops all but the newest checkpoints; returns their folders, to remove after the commit. */
  private async pruneCheckpoints(jobId: string, trx: Db): Promise<string[]> {
    const checkpoints = await this.services.jobs.checkpoints(jobId, trx);
    const folders: string[] = [];
    for (const checkpoint of checkpoints.slice(0, Math.max(0, checkpoints.length - KEPT_CHECKPOINTS))) {
      await this.services.jobs.removeCheckpoint(checkpoint.id, trx);
      const folder = await this.services.models.unregister(checkpoint.fine_tuned_model_checkpoint, trx);
      if (folder) folders.push(folder);
    }
    return folders;
  }

  private modelRow(run: Run, id: string, kind: 'fine-tune' | 'checkpoint', folder: string) {
    return { id, org_id: run.job.organization_id, job_id: run.job.id, base_model: run.baseModel, kind, path: folder, created_at: unixSeconds() };
  }

  /**
   * Where a run continues: the newest checkpoint whose steps were all recorded. An engine that
   * outlived a crashed server may have trained and saved further, unheard; those checkpoints are
   * dropped, so the curve has no gap: the steps are trained again and recorded this time. Older
   * checkpoints no model names (those of earlier pauses) are dropped too.
   */
  private async resumePoint(jobId: string, recordedSteps: number): Promise<CheckpointFolder | null> {
    const folders = checkpointFolders(this.workDir(jobId));
    const resume = folders.filter((folder) => folder.step <= recordedSteps && hasTrainingState(folder)).at(-1) ?? null;
    const models = new Set(await this.services.models.folders(jobId));
    const stale = folders.filter((folder) => folder.step > recordedSteps || (folder !== resume && !models.has(folder.path)));
    await removeFolders(stale.map((folder) => folder.path));
    // The checkpoints kept as models are not resumed from: only the resume point needs its optimizer state.
    await dropTrainingState(folders.filter((folder) => folder !== resume && !stale.includes(folder)));
    return resume;
  }

  private workDir(jobId: string): string {
    return path.join(this.home.work, jobId);
  }

  private specPath(jobId: string): string {
    return path.join(this.workDir(jobId), 'spec.json');
  }

  private pidPath(jobId: string): string {
    return path.join(this.workDir(jobId), 'engine.pid');
  }
}

/** The parts of the dataset doctor's report the runner needs. */
interface ValidationFacts {
  n_examples: number;
  context: number;
  token_counts: Record<string, { distributions: { total_tokens: { max: number } | null } } | undefined>;
}

function validationFacts(report: Record<string, unknown>): ValidationFacts {
  if (typeof report.n_examples !== 'number' || typeof report.context !== 'number' || typeof report.token_counts !== 'object') {
    throw new Error('the validation report lacks the example count, context or token counts');
  }
  return report as unknown as ValidationFacts;
}

/** A checkpoint's metrics are its step's, without the run's length. */
function checkpointMetrics(metrics: Metrics): Record<string, unknown> {
  const { total_steps: _, ...rest } = metrics;
  return rest;
}

/** Packed rows hold the longest example whole; shorter rows waste nothing (attention sees only real tokens). */
function sequenceLength(report: ValidationFacts, model: string): number {
  const longest = report.token_counts[model]?.distributions.total_tokens?.max ?? report.context;
  return Math.min(report.context, Math.max(longest, 512));
}

function stepMessage(data: Metrics): string {
  const loss = (value: unknown) => (typeof value === 'number' ? value.toFixed(4) : 'n/a');
  let message = `Step ${data.step}/${data.total_steps}: training loss=${loss(data.train_loss)}`;
  if ('valid_loss' in data) message += `, validation loss=${loss(data.valid_loss)}`;
  if ('train_reward_accuracy' in data) message += `, reward accuracy=${loss(data.train_reward_accuracy)}, margin=${loss(data.train_reward_margin)}`;
  return message;
}

interface CheckpointFolder {
  step: number;
  path: string;
}

/** The job's complete checkpoint folders (`step-N`), oldest first. */
const checkpointFolders = (workDir: string) => checkpointFoldersNamed(workDir, /^step-(\d+)$/);

/** Checkpoint folders being written (`step-N.tmp`), or left half-written by an engine that failed. */
const halfWrittenCheckpoints = (workDir: string) => checkpointFoldersNamed(workDir, /^step-(\d+)\.tmp$/);

function checkpointFoldersNamed(workDir: string, pattern: RegExp): CheckpointFolder[] {
  const folder = path.join(workDir, 'checkpoints');
  if (!fs.existsSync(folder)) return [];
  return fs
    .readdirSync(folder)
    .flatMap((name) => {
      const match = pattern.exec(name);
      return match ? [{ step: Number(match[1]), path: path.join(folder, name) }] : [];
    })
    .sort((a, b) => a.step - b.step);
}

const hasTrainingState = (folder: CheckpointFolder) => fs.existsSync(path.join(folder.path, TRAINING_STATE));

async function dropTrainingState(folders: CheckpointFolder[]): Promise<void> {
  await Promise.all(folders.map((folder) => fsp.rm(path.join(folder.path, TRAINING_STATE), { force: true })));
}

async function removeFolders(folders: string[]): Promise<void> {
  await Promise.all(folders.map((folder) => fsp.rm(folder, { recursive: true, force: true })));
}
