import { unixSeconds } from '../ids.js';
import { checkpointModelName } from '../models/names.js';
import type { Db } from '../store/store.js';
import {
  type CheckpointFolder,
  type JobFolders,
  checkpointFolders,
  dropTrainingState,
  hasTrainingState,
  removeFolders,
} from './job-folders.js';
import type { Metrics, Run, RunnerServices } from './run.js';

/** Checkpoints a job keeps, as OpenAI's do: the newest three, the final model among them. */
export const KEPT_CHECKPOINTS = 3;

/**
 * The engine's checkpoints as models: an epoch's checkpoint becomes `...:ckpt-step-N`, only the
 * newest few are kept, and only the newest keeps the optimizer state a run resumes from.
 */
export class CheckpointModels {
  constructor(private readonly services: Pick<RunnerServices, 'jobs' | 'models'>) {}

  /** An epoch's checkpoint becomes a model (`...:ckpt-step-N`); the final one is the fine-tuned model itself. */
  async register(run: Run, step: number, folder: string, metrics: Metrics | undefined): Promise<void> {
    if (step <= run.lastCheckpointStep || step >= run.totalSteps) return;
    const { jobs, models } = this.services;
    const name = checkpointModelName(run.fineTunedModel, step);
    const removed = await run.fence.write(async (trx) => {
      await models.registerFineTuned(modelRow(run, name, 'checkpoint', folder), trx);
      await jobs.addCheckpoint(run.job.id, { stepNumber: step, model: name, metrics: checkpointMetrics(metrics ?? { step }) }, trx);
      await jobs.appendEvent(run.job.id, { message: `Checkpoint created at step ${step} with Snapshot ID: ${name}` }, trx);
      return this.prune(run.job.id, trx);
    });
    run.lastCheckpointStep = step;
    await removeFolders(removed);
    // Only the newest checkpoint is resumed from: the others keep their weights and lose the optimizer state.
    await dropTrainingState(checkpointFolders(run.folders).slice(0, -1));
  }

  /** Drops all but the newest checkpoints; returns their folders, to remove after the commit. */
  async prune(jobId: string, trx: Db): Promise<string[]> {
    const checkpoints = await this.services.jobs.checkpoints(jobId, trx);
    const folders: string[] = [];
    for (const checkpoint of checkpoints.slice(0, Math.max(0, checkpoints.length - KEPT_CHECKPOINTS))) {
      await this.services.jobs.removeCheckpoint(checkpoint.id, trx);
      const folder = await this.services.models.unregister(checkpoint.fine_tuned_model_checkpoint, trx);
      if (folder) folders.push(folder);
    }
    return folders;
  }

  /**
   * Where a run continues: the newest checkpoint whose steps were all recorded. An engine that
   * outlived a crashed server may have trained and saved further, unheard; those checkpoints are
   * dropped, so the curve has no gap: the steps are trained again and recorded this time. Older
   * checkpoints no model names (those of earlier pauses) are dropped too.
   */
  async resumePoint(jobId: string, folders: JobFolders, recordedSteps: number): Promise<CheckpointFolder | null> {
    const all = checkpointFolders(folders);
    const resume = all.filter((folder) => folder.step <= recordedSteps && hasTrainingState(folder)).at(-1) ?? null;
    const models = new Set(await this.services.models.folders(jobId));
    const stale = all.filter((folder) => folder.step > recordedSteps || (folder !== resume && !models.has(folder.path)));
    await removeFolders(stale.map((folder) => folder.path));
    // The checkpoints kept as models are not resumed from: only the resume point needs its optimizer state.
    await dropTrainingState(all.filter((folder) => folder !== resume && !stale.includes(folder)));
    return resume;
  }
}

export function modelRow(run: Run, id: string, kind: 'fine-tune' | 'checkpoint', folder: string) {
  return { id, org_id: run.job.organization_id, job_id: run.job.id, base_model: run.baseModel, kind, path: folder, created_at: unixSeconds() };
}

/** A checkpoint's metrics are its step's, without the run's length. */
export function checkpointMetrics(metrics: Metrics): Record<string, unknown> {
  const { total_steps: _, ...rest } = metrics;
  return rest;
}
