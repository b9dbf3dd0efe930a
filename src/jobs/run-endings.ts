import type { Exit } from '../engine/training-process.js';
import { ServiceError } from '../errors.js';
import { DISK_FULL_WORDS } from '../files/disk.js';
import { randomToken } from '../ids.js';
import { publishWith } from '../files/folder-store.js';
import { type CheckpointModels, checkpointMetrics, modelRow } from './checkpoint-models.js';
import { cleanUpJob } from './clean-up.js';
import { halfWrittenCheckpoints, removeFolders } from './job-folders.js';
import { resultsCsv } from './results.js';
import type { JobError, Run, RunnerServices } from './run.js';
import { isFinished } from './status.js';

/**
 * How a run's job ends once its engine has exited: succeeded (the fine-tuned model and the result
 * file, in one commit with the move), failed (with the engine's last lines), or, after a stop,
 * paused, cancelled or back in the queue.
 */
export class RunEndings {
  constructor(
    private readonly services: RunnerServices,
    /** The scratch folder runs write in: a full disk there is named in the job's error. */
    private readonly scratch: string,
    private readonly checkpoints: CheckpointModels,
    /** True once the runner is stopping: a failure is then not retried forever on a full disk. */
    private readonly stopped: () => boolean,
  ) {}

  async succeed(run: Run): Promise<void> {
    const { jobs, models, files, folders } = this.services;
    const job = run.job;
    run.finishing = true;
    const csv = resultsCsv((await jobs.metrics(job.id)).map((m) => m.data));
    const final = run.lastMetrics?.data.step === run.totalSteps ? run.lastMetrics.data : { step: run.totalSteps };
    let removed: string[] = [];
    // The model enters the store as the job ends, under the run's lease, or not at all.
    const staged = await folders.stage(job.id, run.folders.output);
    await publishWith(folders, [{ folder: staged, name: `model-${randomToken(8)}` }], (commit) =>
      jobs.move(
        job.id,
        'running',
        'succeeded',
        [{ message: `New fine-tuned model created: ${run.fineTunedModel}` }, { message: 'The job has successfully completed' }],
        { fine_tuned_model: run.fineTunedModel, trained_tokens: Number(run.done!.trained_tokens) },
        async (trx) => {
          await run.fence.check(trx);
          // The result file commits with the job's end: a cancel that wins the race, or a crash, leaves none behind.
          const results = await files.createResult(job.organization_id, 'step_metrics.csv', Buffer.from(csv), trx);
          await trx.updateTable('jobs').set({ result_files: JSON.stringify([results.id]) }).where('id', '=', job.id).execute();
          const [location] = (await commit()) as [string];
          await models.registerFineTuned(modelRow(run, run.fineTunedModel, 'fine-tune', location), trx);
          await jobs.addCheckpoint(job.id, { stepNumber: run.totalSteps, model: run.fineTunedModel, metrics: checkpointMetrics(final) }, trx);
          removed = await this.checkpoints.prune(job.id, trx);
        },
      ),
    );
    await Promise.all(removed.map((location) => folders.remove(location)));
    await cleanUpJob(job.id, this.services, run.folders);
  }

  async fail(run: Run, error: JobError | null, exit: Exit | null): Promise<void> {
    run.finishing = true;
    // What a failed write left behind goes first: on a full disk, its space lets the failure be recorded.
    await removeFolders(halfWrittenCheckpoints(run.folders).map((folder) => folder.path));
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
          this.services.jobs.move(
            run.job.id,
            'running',
            'failed',
            { level: 'error', message },
            { error: JSON.stringify({ code: error?.code ?? 'engine_failed', message, param: null }) },
            run.fence.check,
          ),
        this.stopped,
      );
    } catch (failure) {
      if (failure instanceof ServiceError && failure.kind === 'conflict') return this.afterStop(run);
      throw failure;
    }
    await cleanUpJob(run.job.id, this.services, run.folders);
  }

  /** After the engine stopped for a cancel, a pause, or a signal from outside. */
  async afterStop(run: Run): Promise<void> {
    const { jobs } = this.services;
    const job = await jobs.get(run.job.organization_id, run.job.id);
    const { error } = run;
    if (error) {
      await run.fence.write((trx) => jobs.appendEvent(job.id, { level: 'warn', message: `The engine failed while stopping: ${error.message}` }, trx));
    }
    if (job.status === 'paused' && run.stoppedAtStep !== null) {
      const message = `Checkpoint saved at step ${run.stoppedAtStep}; resuming continues from there`;
      await run.fence.write((trx) => jobs.appendEvent(job.id, { message }, trx));
    }
    if (job.status === 'running') {
      // Nobody here asked it to stop: the job goes back to the queue and continues from the checkpoint it saved.
      const message = `The engine was stopped from outside the server at step ${run.stoppedAtStep}; the job continues from there`;
      await jobs.move(job.id, 'running', 'queued', { level: 'warn', message }, {}, run.fence.check);
    }
    if (isFinished(job.status)) await cleanUpJob(job.id, this.services, run.folders);
  }

  /** The engine failed for a full disk: while writing a checkpoint (its half-written folder tells the step) or the model. */
  engineDiskFull(run: Run): JobError | null {
    const said = [run.error?.message ?? '', ...(run.engine?.lastLogLines() ?? [])].join('\n');
    if (!DISK_FULL_WORDS.test(said)) return null;
    const step = halfWrittenCheckpoints(run.folders).at(-1)?.step;
    if (step !== undefined) return this.diskFull(`saving the checkpoint at step ${step}`, run.space.checkpoint);
    return this.diskFull(`saving the fine-tuned model at step ${run.lastMetrics?.data.step ?? run.totalSteps}`, run.space.weights);
  }

  diskFull(doing: string, needed?: number, folder = this.scratch): JobError {
    return { code: 'disk_full', message: this.services.disk.fullMessage(doing, needed, folder), plain: true };
  }
}
