import { publishWith } from '../files/folder-store.js';
import { randomToken, unixSeconds } from '../ids.js';
import { checkpointModelName } from '../models/names.js';
import type { Db } from '../store/store.js';
import { TRAINING_STATE } from './job-folders.js';
import type { Metrics, Run, RunnerServices } from './run.js';
import type { ResumePoint } from './stored-folders.js';

/** Checkpoints a job keeps, as OpenAI's do: the newest three, the final model among them. */
export const KEPT_CHECKPOINTS = 3;

/**
 * The engine's checkpoints in the folder store. Each one the engine saves enters the store as the
 * job's resume point, in the transaction that proves the run's lease; an epoch's checkpoint also
 * becomes a model (`...:ckpt-step-N`). Only the newest few are kept, and only the resume point
 * keeps the optimizer state.
 */
export class CheckpointModels {
  constructor(private readonly services: Pick<RunnerServices, 'jobs' | 'models' | 'folders' | 'stored'>) {}

  /**
   * Publishes a checkpoint the engine saved in the run's scratch folder. A worker that lost its
   * lease has its transaction refused (LeaseLost): what it saved never becomes a record, and the
   * staged copy is thrown away (or swept by the job's next holder). A job that ended (cancelled
   * before this worker heard of it) records no more checkpoints either.
   */
  async publish(run: Run, step: number, scratchFolder: string, model: { metrics: Metrics | undefined } | null): Promise<void> {
    const { folders, stored, jobs } = this.services;
    const staged = await folders.stage(run.job.id, scratchFolder);
    const published = await publishWith(folders, [{ folder: staged, name: `step-${step}-${randomToken(8)}` }], (commit) =>
      run.fence.write(async (trx) => {
        if (await jobs.hasEnded(run.job.id, trx)) return null;
        const [location] = (await commit()) as [string];
        const previous = await stored.resumePoint(run.job.id, trx);
        await stored.recordResumePoint(run.job.id, { step, location }, trx);
        const removed = model && this.becomesModel(run, step) ? await this.recordModel(run, step, location, model.metrics, trx) : [];
        return { previous, removed };
      }),
    );
    if (!published) return staged.discard();
    const { previous, removed } = published;
    run.resumeStep = step;
    await Promise.all(removed.map((location) => folders.remove(location)));
    await this.retire(run.job.id, previous);
  }

  private becomesModel(run: Run, step: number): boolean {
    return step > run.lastCheckpointStep && step < run.totalSteps;
  }

  private async recordModel(run: Run, step: number, location: string, metrics: Metrics | undefined, trx: Db): Promise<string[]> {
    const { jobs, models } = this.services;
    const name = checkpointModelName(run.fineTunedModel, step);
    await models.registerFineTuned(modelRow(run, name, 'checkpoint', location), trx);
    await jobs.addCheckpoint(run.job.id, { stepNumber: step, model: name, metrics: checkpointMetrics(metrics ?? { step }) }, trx);
    await jobs.appendEvent(run.job.id, { message: `Checkpoint created at step ${step} with Snapshot ID: ${name}` }, trx);
    run.lastCheckpointStep = step;
    return this.prune(run.job.id, trx);
  }

  /** Drops all but the newest checkpoints; returns their locations, to remove after the commit. */
  async prune(jobId: string, trx: Db): Promise<string[]> {
    const checkpoints = await this.services.jobs.checkpoints(jobId, trx);
    const locations: string[] = [];
    for (const checkpoint of checkpoints.slice(0, Math.max(0, checkpoints.length - KEPT_CHECKPOINTS))) {
      await this.services.jobs.removeCheckpoint(checkpoint.id, trx);
      const location = await this.services.models.unregister(checkpoint.fine_tuned_model_checkpoint, trx);
      if (location) locations.push(location);
    }
    return locations;
  }

  /** A checkpoint no longer resumed from: a model keeps its weights and loses the optimizer state; any other goes. */
  async retire(jobId: string, point: ResumePoint | null): Promise<void> {
    if (!point) return;
    const named = await this.services.stored.named(jobId);
    if (named.has(point.location)) await this.services.folders.removeFiles(point.location, [TRAINING_STATE]);
    else await this.services.folders.remove(point.location);
  }
}

export function modelRow(run: Run, id: string, kind: 'fine-tune' | 'checkpoint', location: string) {
  return { id, org_id: run.job.organization_id, job_id: run.job.id, base_model: run.baseModel, kind, path: location, created_at: unixSeconds() };
}

/** A checkpoint's metrics are its step's, without the run's length. */
export function checkpointMetrics(metrics: Metrics): Record<string, unknown> {
  const { total_steps: _, ...rest } = metrics;
  return rest;
}
