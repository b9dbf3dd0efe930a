import type { HomeLayout } from '../config.js';
import { stopOrphan } from '../engine/training-process.js';
import type { CheckpointModels } from './checkpoint-models.js';
import { jobFolders } from './job-folders.js';
import type { FineTuningJob, JobChanges, JobService, NewEvent } from './jobs.js';

/**
 * Which queued job a runner trains next, and taking it: the move to `running` is conditional
 * on the job still being queued, so a job is never taken twice.
 */
export class JobClaims {
  constructor(
    private readonly jobs: JobService,
    private readonly checkpoints: CheckpointModels,
    private readonly home: HomeLayout,
  ) {}

  /**
   * Jobs still `running` when a runner starts belonged to one that died. Their engines are stopped
   * if they outlived it, and the jobs go back to the queue to continue from their last checkpoint.
   */
  async requeueAbandoned(): Promise<void> {
    for (const job of await this.jobs.withStatus('running')) {
      const folders = jobFolders(this.home, job.id);
      await stopOrphan(folders.pid);
      const checkpoint = await this.checkpoints.resumePoint(job.id, folders, (await this.jobs.lastStep(job.id))?.data.step ?? 0);
      await this.jobs.move(job.id, 'running', 'queued', {
        message: checkpoint
          ? `The server restarted while the job was running; it continues from its checkpoint at step ${checkpoint.step}`
          : 'The server restarted while the job was running; it starts again',
      });
    }
  }

  /** The oldest queued job not already in hand. */
  async next(inHand: ReadonlySet<string>): Promise<FineTuningJob | undefined> {
    return (await this.jobs.withStatus('queued')).find((job) => !inHand.has(job.id));
  }

  /** Moves the job to `running`; refused with a conflict when someone moved it first. */
  take(jobId: string, event: NewEvent, changes: JobChanges): Promise<FineTuningJob> {
    return this.jobs.move(jobId, 'queued', 'running', event, changes);
  }
}
