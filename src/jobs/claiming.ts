import { stopOrphan } from '../engine/training-process.js';
import { jobFolders } from './job-folders.js';
import type { FineTuningJob, JobChanges, JobService, NewEvent } from './jobs.js';
import type { Capabilities } from './capabilities.js';
import type { Fence, JobLeases } from './leases.js';
import type { StoredFolders } from './stored-folders.js';

/** A process that trains jobs, as the queue sees it: who it is and how much memory a job may take on it. */
export interface WorkerIdentity {
  id: string;
  capabilities: Capabilities;
  /** Bytes each process of a job may take here (src/jobs/capabilities.ts `memoryForOneJob`, or less as the operator says). */
  memory: number;
  /** Processes training a job together here (src/jobs/capabilities.ts `processesPerJob`): full fine-tuning shards across them. */
  processes: number;
}

/**
 * Which job a worker trains next, and taking it. A job is leased before anything is prepared for
 * it, so two workers never prepare or train the same job; the move to `running` is made under the
 * lease. A running job whose worker stopped renewing its lease is taken over first.
 */
export class JobClaims {
  constructor(
    private readonly jobs: JobService,
    private readonly stored: StoredFolders,
    private readonly leases: JobLeases,
    /** This worker's scratch folder, where an engine it started before a restart has its pid. */
    private readonly scratch: string,
    private readonly worker: WorkerIdentity,
  ) {}

  /**
   * Jobs still `running` under this worker's lease when it starts (or under none) belonged to it
   * before it died. Their engines are stopped if they outlived it, and the jobs go back to the
   * queue to continue from their last checkpoint.
   */
  async requeueAbandoned(): Promise<void> {
    for (const job of await this.jobs.withStatus('running')) {
      const lease = await this.leases.adopt(job.id, this.worker.id);
      if (!lease) continue;
      const fence = this.leases.fence(lease);
      // Put back in the queue, the job may start on another host: an engine left on this one stops now.
      await stopOrphan(jobFolders(this.scratch, job.id).pid);
      await this.requeue(fence, (step) =>
        step === null
          ? 'The server restarted while the job was running; it starts again'
          : `The server restarted while the job was running; it continues from its checkpoint at step ${step}`,
      );
      await this.leases.release(lease);
    }
  }

  /**
   * Leases the next job to train: a running one whose worker was lost (put back in the queue
   * first), or the oldest queued one. The runner starts the job, stopping an engine of it left here.
   */
  async next(): Promise<Fence | null> {
    const waiting = await this.leases.waiting(this.worker);
    const lost = waiting.lost ? await this.leases.takeOverExpired(this.worker.id, this.worker) : null;
    if (lost) {
      const fence = this.leases.fence(lost);
      await this.requeue(fence, (step) =>
        step === null
          ? 'The worker training the job stopped renewing its lease; the job starts again'
          : `The worker training the job stopped renewing its lease; the job continues from its checkpoint at step ${step}`,
      );
      return fence;
    }
    const lease = waiting.queued ? await this.leases.claimQueued(this.worker.id, this.worker) : null;
    return lease ? this.leases.fence(lease) : null;
  }

  /** Moves the leased job to `running`; refused with a conflict when someone moved it first (a cancel). */
  take(fence: Fence, event: NewEvent, changes: JobChanges): Promise<FineTuningJob> {
    return this.jobs.move(fence.lease.jobId, 'queued', 'running', event, changes, fence.check);
  }

  private async requeue(fence: Fence, message: (step: number | null) => string): Promise<void> {
    const jobId = fence.lease.jobId;
    const checkpoint = await this.stored.resumePoint(jobId);
    await this.jobs.move(jobId, 'running', 'queued', { message: message(checkpoint?.step ?? null) }, {}, fence.check);
  }
}
