import { TRAINING_STATE, type JobFolders, clearScratch } from './job-folders.js';
import type { RunnerServices } from './run.js';

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
