import fs from 'node:fs';
import path from 'node:path';
import type { HomeLayout } from '../config.js';
import type { ModelService } from '../models/models.js';
import { checkpointFolders, dropTrainingState, jobFolders, removeFolders } from './job-folders.js';
import type { FineTuningJob } from './jobs.js';

/**
 * A finished job keeps its models' folders and its engine log; its training arrays, the
 * checkpoints no model names, and (unless it succeeded) its partial output go.
 */
export async function cleanUpJob(job: FineTuningJob, models: ModelService, home: HomeLayout): Promise<void> {
  const folders = jobFolders(home, job.id);
  const kept = new Set(await models.folders(job.id));
  const stale = fs.existsSync(folders.checkpoints)
    ? fs.readdirSync(folders.checkpoints).map((name) => path.join(folders.checkpoints, name)).filter((folder) => !kept.has(folder))
    : [];
  await removeFolders([folders.train, folders.valid, ...stale]);
  // A finished job is never resumed: its checkpoints are models now, and optimizer state is most of their size.
  await dropTrainingState(checkpointFolders(folders));
  if (job.status !== 'succeeded') await removeFolders([folders.output]);
}
