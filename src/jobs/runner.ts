import os from 'node:os';
import type { HomeLayout } from '../config.js';
import { enginePython } from '../engine/python.js';
import { TrainingProcess, stopOrphan } from '../engine/training-process.js';
import { ServiceError } from '../errors.js';
import { isDiskFull, megabytes } from '../files/disk.js';
import { fineTunedModelName } from '../models/names.js';
import { JobClaims } from './claiming.js';
import { CheckpointModels, KEPT_CHECKPOINTS } from './checkpoint-models.js';
import { type CheckpointSpace, checkpointSpace } from './checkpoint-space.js';
import { cleanUpJob } from './clean-up.js';
import { EngineEvents } from './engine-events.js';
import { jobFolders } from './job-folders.js';
import type { FineTuningJob } from './jobs.js';
import type { Run, RunnerServices } from './run.js';
import { RunEndings } from './run-endings.js';
import { isFinished } from './status.js';
import { planTraining, writeTrainingSpec } from './training-spec.js';
import { WorkLoop } from './work-loop.js';

export type { RunnerServices } from './run.js';

export interface RunnerOptions {
  /** Engine processes at once; each trains one job. */
  slots: number;
  log: (message: string, error?: unknown) => void;
}

/** A stopping server waits this long for engines to save a checkpoint before killing them. */
const SHUTDOWN_GRACE_MS = 15_000;
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

/**
 * The `queued -> running -> succeeded | failed` part of a job's way: takes queued jobs oldest
 * first when an engine slot is free, starts the engine on the spec it writes, and supervises it:
 * its events become the job's record (engine-events.ts), its exit the job's end (run-endings.ts),
 * and a cancel or pause stops it.
 */
export class JobRunner {
  private readonly runs = new Map<string, Run>();
  private readonly loop = new WorkLoop(
    () => this.schedule(),
    (error) => this.options.log('starting queued jobs failed', error),
  );
  private readonly checkpoints: CheckpointModels;
  private readonly claims: JobClaims;
  private readonly events: EngineEvents;
  private readonly endings: RunEndings;

  constructor(
    private readonly services: RunnerServices,
    private readonly home: HomeLayout,
    private readonly options: RunnerOptions,
  ) {
    this.checkpoints = new CheckpointModels(services);
    this.claims = new JobClaims(services.jobs, this.checkpoints, home);
    this.events = new EngineEvents(services.jobs, this.checkpoints);
    this.endings = new RunEndings(services, home, this.checkpoints, () => this.loop.stopped);
  }

  /**
   * On start: jobs still `running` belonged to a server that died; they go back to the queue.
   * A server with no slots trains nothing and leaves running jobs to the one that does.
   */
  async recover(): Promise<void> {
    if (this.options.slots === 0) return;
    await this.claims.requeueAbandoned();
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
      cleanUpJob(job, this.services.models, this.home).catch((error) => this.options.log(`cleaning up after ${job.id}`, error));
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
      const next = await this.claims.next(new Set(this.runs.keys()));
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
    const folders = jobFolders(this.home, job.id);
    // An engine a crashed server left behind while it was pausing or cancelling this job.
    await stopOrphan(folders.pid);
    const model = this.services.baseModels.get(job.model);
    if (!model) throw new Error(`the base model ${job.model} is no longer registered`);
    const report = await this.services.jobs.trainingReport(job.id);
    const plan = planTraining(job, model, report);
    const last = await this.services.jobs.lastStep(job.id);
    const resumeFrom = await this.checkpoints.resumePoint(job.id, folders, last?.data.step ?? 0);
    const space = checkpointSpace(model.path, {
      full: plan.resolved.full,
      loraRank: plan.resolved.lora_rank ?? 0,
      nEpochs: plan.resolved.n_epochs,
      keptCheckpoints: KEPT_CHECKPOINTS,
    });
    const spaceWarning = await this.checkSpace(space, resumeFrom !== null);
    await writeTrainingSpec({
      job,
      model,
      report,
      plan,
      folders,
      resumeFrom: resumeFrom?.path ?? null,
      // Engines side by side share the cores rather than each taking all of them.
      threads: this.options.slots > 1 ? Math.max(1, Math.floor(os.availableParallelism() / this.options.slots)) : null,
    });
    // Found before the job is marked running: a host without torch fails the job from the queue.
    enginePython();

    const running = await this.claims.take(
      job.id,
      { message: resumeFrom ? `Fine-tuning job resumed from its checkpoint at step ${resumeFrom.step}` : 'Fine-tuning job started' },
      { method: { type: 'supervised', supervised: { hyperparameters: plan.resolved } } },
    );
    const checkpoints = await this.services.jobs.checkpoints(job.id);
    const run: Run = {
      job: running,
      folders,
      engine: null,
      stopping: null,
      finishing: false,
      finished: Promise.resolve(),
      fineTunedModel: fineTunedModelName(job, await this.services.orgs.name(job.organization_id)),
      space,
      totalSteps: plan.totalSteps,
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
      if (resumeFrom && resumeFrom.step % plan.stepsPerEpoch === 0) {
        const [atCheckpoint] = await this.services.jobs.metrics(job.id, resumeFrom.step);
        await this.checkpoints.register(run, resumeFrom.step, resumeFrom.path, atCheckpoint?.data.step === resumeFrom.step ? atCheckpoint.data : undefined);
      }
      run.engine = TrainingProcess.start({ specPath: folders.spec, logPath: folders.log, pidPath: folders.pid });
    } catch (error) {
      await this.endings.fail(run, { code: 'engine_start_failed', message: `the engine could not be started: ${(error as Error).message}` }, null);
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
    const { endings } = this;
    try {
      for await (const event of engine.events()) await this.events.record(run, event);
    } catch (error) {
      // The record of the run broke (a database error, a full disk): the engine must not train unrecorded.
      engine.kill();
      await engine.exited;
      const step = run.lastMetrics?.data.step ?? run.startStep;
      return endings.fail(
        run,
        isDiskFull(error)
          ? endings.diskFull(`recording step ${step + 1}`, undefined, this.home.root)
          : { code: 'internal', message: `the server could not record the run: ${(error as Error).message}` },
        null,
      );
    }
    const exit = await engine.exited;
    if (run.stopping === 'shutdown') return;
    if (run.stopping) return endings.afterStop(run);
    if (run.done && exit.code === 0) {
      try {
        await endings.succeed(run);
      } catch (error) {
        if (error instanceof ServiceError && error.kind === 'conflict') return endings.afterStop(run);
        if (!isDiskFull(error)) this.options.log(`finishing ${run.job.id} failed`, error);
        await endings.fail(
          run,
          isDiskFull(error)
            ? endings.diskFull('writing the result file', undefined, this.home.blobs)
            : { code: 'internal', message: `the fine-tuned model could not be recorded: ${(error as Error).message}` },
          null,
        );
      }
      return;
    }
    // Stopped by a signal from outside (a terminal's Ctrl-C, a service manager): it saved a checkpoint.
    if (run.stoppedAtStep !== null && exit.code === 0) return endings.afterStop(run);
    await endings.fail(run, endings.engineDiskFull(run) ?? run.error, exit);
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
}
