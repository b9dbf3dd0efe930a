import type { Db } from '../store/store.js';
import { TRAINING_STATE, type JobFolders, clearScratch } from './job-folders.js';
import type { RunnerServices } from './run.js';
import { UNFINISHED } from './status.js';

/**
 * A finished job keeps its models in the folder store and nothing else there: its training arrays,
 * its resume point and whatever no model names go, and its models lose the optimizer state (a
 * finished job is never resumed; that state is most of a checkpoint's size). Its scratch folder on
 * the worker that ran it keeps only the engine's log.
 */
export async function cleanUpJob(jobId: string, services: Pick<RunnerServices, 'folders' | 'stored'>, scratch: JobFolders | null): Promise<void> {
  await services.stored.forgetTraining(jobId);
  const kept = await services.stored.named(jobId);
  await services.folders.sweep(jobId, kept);
  await Promise.all([...kept].map((location) => services.folders.removeFiles(location, [TRAINING_STATE])));
  if (scratch) await clearScratch(scratch, true);
}

/**
 * On a server's start: the store's prefixes of jobs that have ended are swept of what no record
 * names, as a worker killed between staging a folder and throwing it away (its lease lost) leaves.
 * Jobs still under way are swept by their next run, under its lease.
 */
export async function sweepEndedJobs(db: Db, services: Pick<RunnerServices, 'folders' | 'stored'>): Promise<void> {
  const prefixes = await services.folders.prefixes();
  if (prefixes.length === 0) return;
  // One read of the jobs still under way (few), not one per prefix (one for every job whose models remain).
  const unfinished = new Set((await db.selectFrom('jobs').select('id').where('status', 'in', UNFINISHED).execute()).map((job) => job.id));
  for (const prefix of prefixes) {
    if (!unfinished.has(prefix)) await services.folders.sweep(prefix, await services.stored.named(prefix));
  }
}
