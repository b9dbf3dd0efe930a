import type { Db } from '../store/store.js';

/** Where a job's training arrays are in the folder store (src/files/folder-store.ts). */
export interface TrainingArrays {
  train: string;
  valid: string | null;
}

/** The newest checkpoint recorded under the job's lease: a run of the job continues from it. */
export interface ResumePoint {
  step: number;
  location: string;
}

/** The records that name a job's objects in the folder store: its arrays, the checkpoint it resumes from, and its models. */
export class StoredFolders {
  constructor(private readonly db: Db) {}

  async recordArrays(jobId: string, arrays: TrainingArrays, db: Db = this.db): Promise<void> {
    await db.updateTable('jobs').set({ train_arrays: arrays.train, valid_arrays: arrays.valid }).where('id', '=', jobId).execute();
  }

  async recordResumePoint(jobId: string, point: ResumePoint | null, db: Db = this.db): Promise<void> {
    await db
      .updateTable('jobs')
      .set({ resume_step: point?.step ?? null, resume_location: point?.location ?? null })
      .where('id', '=', jobId)
      .execute();
  }

  async resumePoint(jobId: string, db: Db = this.db): Promise<ResumePoint | null> {
    const row = await db.selectFrom('jobs').select(['resume_step', 'resume_location']).where('id', '=', jobId).executeTakeFirst();
    return row?.resume_location && row.resume_step !== null ? { step: row.resume_step, location: row.resume_location } : null;
  }

  /** A finished job is never trained again: its arrays and resume point are no longer named. */
  async forgetTraining(jobId: string): Promise<void> {
    await this.db
      .updateTable('jobs')
      .set({ train_arrays: null, valid_arrays: null, resume_step: null, resume_location: null })
      .where('id', '=', jobId)
      .execute();
  }

  /** Every location a record names for the job: what a sweep of its prefix keeps. */
  async named(jobId: string, db: Db = this.db): Promise<Set<string>> {
    return (await this.ofJob(jobId, db)).named;
  }

  /** All the job's records at once (a run's start needs each): its arrays, its resume point, and every location they and its models name. */
  async ofJob(jobId: string, db: Db = this.db): Promise<{ arrays: TrainingArrays | null; resumePoint: ResumePoint | null; named: Set<string> }> {
    const job = await db
      .selectFrom('jobs')
      .select(['train_arrays', 'valid_arrays', 'resume_step', 'resume_location'])
      .where('id', '=', jobId)
      .executeTakeFirst();
    const models = await db.selectFrom('fine_tuned_models').select('path').where('job_id', '=', jobId).execute();
    return {
      arrays: job?.train_arrays ? { train: job.train_arrays, valid: job.valid_arrays } : null,
      resumePoint: job?.resume_location && job.resume_step !== null ? { step: job.resume_step, location: job.resume_location } : null,
      named: new Set([job?.train_arrays, job?.valid_arrays, job?.resume_location, ...models.map((m) => m.path)].filter((l): l is string => !!l)),
    };
  }
}
