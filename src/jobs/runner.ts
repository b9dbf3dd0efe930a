import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { HomeLayout } from '../config.js';
import { enginePython } from '../engine/python.js';
import { TrainingProcess, stopOrphan } from '../engine/training-process.js';
import { ServiceError } from '../errors.js';
import { isDiskFull, megabytes } from '../files/disk.js';
import { fineTunedModelName } from '../models/names.js';
import { JobClaims, type WorkerIdentity } from './claiming.js';
import { CheckpointModels, KEPT_CHECKPOINTS } from './checkpoint-models.js';
import { type CheckpointSpace, checkpointSpace } from './checkpoint-space.js';
import { cleanUpJob } from './clean-up.js';
import { EngineEvents } from './engine-events.js';
import { clearScratch, jobFolders } from './job-folders.js';
import type { FineTuningJob, Method } from './jobs.js';
import { type Fence, type JobLeases, LeaseLost } from './leases.js';
import type { JobStatus } from './status.js';
import type { Run, RunnerServices } from './run.js';
import { RunEndings } from './run-endings.js';
import { isFinished } from './status.js';
import { planTraining, writeTrainingSpec } from './training-spec.js';
import { WorkLoop } from './work-loop.js';
import type { WorkerRegistry } from './workers.js';

export type { RunnerServices } from './run.js';

export interface RunnerOptions {
  /** Engine processes at once; each trains one job. */
  slots: number;
  /**
   * This process's own folder for the runs it trains (engine spec, pid and log, the checkpoints and
   * model being written). On the folder store's filesystem, publishing a checkpoint is a rename.
   */
  scratch: string;
  /** Who this runner is in the queue, and the memory a job may take here. */
  worker: WorkerIdentity;
  leases: JobLeases;
  workers: WorkerRegistry;
  /** How often the queue is looked at besides when this process moves a job (workers elsewhere queue and cancel too). */
  pollMs: number;
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
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly services: RunnerServices,
    private readonly home: HomeLayout,
    private readonly options: RunnerOptions,
  ) {
    this.checkpoints = new CheckpointModels(services);
    this.claims = new JobClaims(services.jobs, services.stored, options.leases, options.scratch, options.worker);
    this.events = new EngineEvents(services.jobs, this.checkpoints);
    this.endings = new RunEndings(services, options.scratch, this.checkpoints, () => this.loop.stopped);
  }

  /**
   * On start: jobs still `running` belonged to a server that died; they go back to the queue.
   * A server with no slots trains nothing and leaves running jobs to the one that does.
   */
  async recover(): Promise<void> {
    if (this.options.slots === 0) return;
    await this.claims.requeueAbandoned();
  }

  /**
   * Starts taking jobs: now, on every look at the queue, and on every heartbeat, which renews the
   * leases of the jobs in hand and learns of cancels and pauses made by other processes.
   */
  async start(): Promise<void> {
    if (this.options.slots === 0) return;
    const { worker, slots } = this.options;
    await this.options.workers.register({ id: worker.id, slots, capabilities: worker.capabilities });
    this.kick();
    this.timers.push(setInterval(() => this.kick(), this.options.pollMs));
    const heartbeat = setInterval(
      () => this.heartbeat().catch((error) => this.options.log('renewing job leases failed', error)),
      this.options.leases.ttlMs / 3,
    );
    this.timers.push(heartbeat);
  }

  /** Looks for queued jobs now; if a look is under way, another follows it. */
  kick(): void {
    if (this.options.slots > 0) this.loop.kick();
  }

  /** Every committed move of every job in this process comes here: queued jobs are taken, cancelled or paused runs stopped. */
  jobChanged(job: FineTuningJob): void {
    const run = this.runs.get(job.id);
    if (run) this.statusSeen(run, job.status);
    if (job.status === 'queued') this.kick();
    if (!run && isFinished(job.status) && job.status !== 'succeeded') {
      this.cleanUpUnheld(job).catch((error) => this.options.log(`cleaning up after ${job.id}`, error));
    }
  }

  /** A job cancelled while no runner holds it (queued, paused) is cleaned up here; a held one by its runner. */
  private async cleanUpUnheld(job: FineTuningJob): Promise<void> {
    if (await this.options.leases.isHeld(job.id)) return;
    await cleanUpJob(job.id, this.services, jobFolders(this.options.scratch, job.id));
  }

  private statusSeen(run: Run, status: JobStatus): void {
    if (status !== 'running' && !run.stopping && !run.finishing) {
      run.stopping = status === 'paused' ? 'pause' : 'cancel';
      run.engine?.stop();
    }
  }

  private async heartbeat(): Promise<void> {
    await this.options.workers.beat(this.options.worker.id);
    for (const run of [...this.runs.values()]) {
      const status = await this.options.leases.renew(run.fence.lease);
      if (status !== null) {
        this.statusSeen(run, status);
        continue;
      }
      if (run.stopping === 'lost') continue;
      // Another worker may be training the job already: this engine must stop at once, saving nothing.
      this.options.log(`the lease on ${run.job.id} expired; its engine is stopped`);
      run.stopping = 'lost';
      run.engine?.kill();
    }
  }

  /**
   * Stops taking jobs and asks every engine to save a checkpoint and exit; the jobs stay
   * `running`, so the next start continues them from there.
   */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
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
    if (this.options.slots > 0) await this.options.workers.stopped(this.options.worker.id);
  }

  private async schedule(): Promise<void> {
    while (!this.loop.stopped && this.runs.size < this.options.slots) {
      const fence = await this.claims.next();
      if (!fence) return;
      try {
        await this.begin(await this.services.jobs.byId(fence.lease.jobId), fence);
      } catch (error) {
        if (!(error instanceof LeaseLost)) await this.refuse(fence, error);
        await this.options.leases.release(fence.lease);
      }
    }
  }

  /** A job that could not be started fails from the queue, saying why. */
  private async refuse(fence: Fence, error: unknown): Promise<void> {
    const code = error instanceof StartRefused ? error.code : 'engine_start_failed';
    if (!(error instanceof StartRefused)) this.options.log(`starting ${fence.lease.jobId} failed`, error);
    const message = `The job could not be started: ${(error as Error).message}`;
    const recorded = JSON.stringify({ code, message, param: null });
    await this.services.disk
      .persist(
        () => this.services.jobs.move(fence.lease.jobId, 'queued', 'failed', { level: 'error', message }, { error: recorded }, fence.check),
        () => this.loop.stopped,
      )
      // Cancelled or paused meanwhile, or taken by another worker: nothing to do.
      .catch((failure) => {
        if (!((failure instanceof ServiceError && failure.kind === 'conflict') || failure instanceof LeaseLost)) throw failure;
      });
  }

  /** Resolves the hyperparameters, writes the engine's spec, moves the job to running and starts the engine. */
  private async begin(job: FineTuningJob, fence: Fence): Promise<void> {
    const { folders: store, stored } = this.services;
    const folders = jobFolders(this.options.scratch, job.id);
    // An engine a crashed server left behind while it was pausing or cancelling this job.
    await stopOrphan(folders.pid);
    // What an engine wrote here that was never recorded goes, and so does what a worker that lost
    // the job staged in the store: under this lease nobody else writes for the job.
    await clearScratch(folders);
    await fsp.mkdir(folders.work, { recursive: true });
    const { arrays, resumePoint: resumeFrom, named } = await stored.ofJob(job.id);
    await store.sweep(job.id, named);
    if (!arrays) throw new Error(`job ${job.id} has no training arrays in the store: its files were never validated`);
    const start = await this.services.jobs.startingPoint(job.organization_id, job.model);
    const model = start.root;
    const method = job.method as Method;
    const report = await this.services.jobs.trainingReport(job.id);
    const plan = planTraining(method, start, report);
    const last = await this.services.jobs.lastStep(job.id);
    const space = checkpointSpace(model.path, {
      full: plan.resolved.full,
      loraRank: plan.resolved.lora_rank ?? 0,
      nEpochs: plan.resolved.n_epochs,
      keptCheckpoints: KEPT_CHECKPOINTS,
    });
    const spaceWarning = await this.checkSpace(space, resumeFrom !== null);
    await writeTrainingSpec({
      job,
      method,
      start,
      report,
      plan,
      folders,
      // Read in place from a local store; fetched into the scratch folder from any other.
      inputs: {
        train: await store.open(arrays.train, path.join(folders.inputs, 'train')),
        valid: arrays.valid ? await store.open(arrays.valid, path.join(folders.inputs, 'valid')) : null,
        resumeFrom: resumeFrom ? await store.open(resumeFrom.location, path.join(folders.inputs, 'resume')) : null,
      },
      // Engines side by side share the cores rather than each taking all of them.
      threads: this.options.slots > 1 ? Math.max(1, Math.floor(os.availableParallelism() / this.options.slots)) : null,
    });
    // Found before the job is marked running: a host without torch fails the job from the queue.
    enginePython();

    const running = await this.claims.take(
      fence,
      {
        message: resumeFrom ? `Fine-tuning job resumed from its checkpoint at step ${resumeFrom.step}` : 'Fine-tuning job started',
        // Which worker trains it: the dashboard and `jobs follow` show it.
        data: { worker: this.options.worker.id },
      },
      { method: method.type === 'dpo' ? { type: 'dpo', dpo: { hyperparameters: plan.resolved } } : { type: 'supervised', supervised: { hyperparameters: plan.resolved } } },
    );
    const checkpoints = await this.services.jobs.checkpoints(job.id);
    const run: Run = {
      job: running,
      folders,
      fence,
      engine: null,
      stopping: null,
      finishing: false,
      finished: Promise.resolve(),
      fineTunedModel: fineTunedModelName({ ...job, model: model.name }, await this.services.orgs.name(job.organization_id)),
      baseModel: plan.resolved.full ? model.name : start.weightsModel,
      space,
      totalSteps: plan.totalSteps,
      startStep: resumeFrom?.step ?? 0,
      lastMetrics: last,
      lastCheckpointStep: Math.max(0, ...checkpoints.map((c) => c.step_number)),
      resumeStep: resumeFrom?.step ?? 0,
      lastEstimateAt: 0,
      error: null,
      done: null,
      stoppedAtStep: null,
    };
    try {
      if (spaceWarning) await fence.write((trx) => this.services.jobs.appendEvent(job.id, { level: 'warn', message: spaceWarning }, trx));
      run.engine = TrainingProcess.start({ specPath: folders.spec, logPath: folders.log, pidPath: folders.pid, processes: this.options.worker.processes });
    } catch (error) {
      await this.endings.fail(run, { code: 'engine_start_failed', message: `the engine could not be started: ${(error as Error).message}` }, null);
      return;
    }
    this.runs.set(job.id, run);
    run.finished = this.supervise(run, run.engine)
      .catch((error) => {
        if (error instanceof LeaseLost) run.stopping = 'lost';
        else this.options.log(`supervising ${job.id} failed`, error);
      })
      // A run stopped by a shutdown keeps its lease: the job is still running, and this worker's next start takes it back.
      // A lost one leaves nothing here: what its engine wrote was never recorded, and the job is another worker's, or over.
      .then(() => (run.stopping === 'lost' ? this.afterLoss(run) : run.stopping === 'shutdown' ? undefined : this.options.leases.release(fence.lease)))
      .catch((error) => this.options.log(`releasing ${job.id} failed`, error))
      .finally(() => {
        this.runs.delete(job.id);
        this.kick();
      });
  }

  /**
   * A job whose lease this worker lost is trained by another, or has ended meanwhile (a cancel
   * this worker heard of too late): then nobody else cleans it up, and no run can write for it again.
   */
  private async afterLoss(run: Run): Promise<void> {
    await clearScratch(run.folders, true);
    if (await this.services.jobs.hasEnded(run.job.id)) await cleanUpJob(run.job.id, this.services, run.folders);
  }

  private async supervise(run: Run, engine: TrainingProcess): Promise<void> {
    const { endings } = this;
    try {
      for await (const event of engine.events()) await this.events.record(run, event);
    } catch (error) {
      if (error instanceof LeaseLost) {
        // Another worker holds the job: this one writes nothing more for it.
        this.options.log(`the lease on ${run.job.id} was lost to another worker; nothing more is written for the job here`);
        run.stopping = 'lost';
        engine.kill();
        await engine.exited;
        return;
      }
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
    if (run.stopping === 'shutdown' || run.stopping === 'lost') return;
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
    // Stopped by a signal from outside (a terminal's Ctrl-C, a service manager): it saved a checkpoint
    // and said so. Its exit status says nothing more: under torchrun it is the launcher's, which
    // exits 1 after passing a SIGTERM on to its processes, however they ended.
    if (run.stoppedAtStep !== null) return endings.afterStop(run);
    await endings.fail(run, endings.engineDiskFull(run) ?? run.error, exit);
  }

  /**
   * Before a fresh start: a disk that cannot hold the job's checkpoints and model refuses the job;
   * one that only just can gives a warning (returned). A resumed job's files are mostly there already.
   */
  private async checkSpace(space: CheckpointSpace, resuming: boolean): Promise<string | null> {
    await this.services.disk.setAside();
    if (resuming) return null;
    const free = this.services.disk.freeBytes(this.options.scratch);
    const need = `its checkpoints and fine-tuned model need about ${megabytes(space.job)}, ${megabytes(free)} free on the disk of ${this.home.root}`;
    if (free < space.job) throw new StartRefused('insufficient_disk_space', `not enough disk space: ${need}`);
    return free < space.job * SPACE_WARNING_RATIO ? `The disk is nearly full: ${need}` : null;
  }
}
