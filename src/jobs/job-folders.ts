import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { HomeLayout } from '../config.js';

/** Where one job's files are: its work folder (arrays, spec, engine log and pid, checkpoints) and its output. */
export interface JobFolders {
  work: string;
  train: string;
  valid: string;
  spec: string;
  pid: string;
  log: string;
  checkpoints: string;
  output: string;
}

export function jobFolders(home: HomeLayout, jobId: string): JobFolders {
  const work = path.join(home.work, jobId);
  return {
    work,
    train: path.join(work, 'train'),
    valid: path.join(work, 'valid'),
    spec: path.join(work, 'spec.json'),
    pid: path.join(work, 'engine.pid'),
    log: path.join(work, 'engine.log'),
    checkpoints: path.join(work, 'checkpoints'),
    output: path.join(home.adapters, jobId),
  };
}

/** The engine's file in a checkpoint folder that holds the optimizer state (engine/tunelab_engine/checkpoint.py). */
const TRAINING_STATE = 'training_state.pt';

export interface CheckpointFolder {
  step: number;
  path: string;
}

/** The job's complete checkpoint folders (`step-N`), oldest first. */
export const checkpointFolders = (folders: JobFolders) => checkpointFoldersNamed(folders.checkpoints, /^step-(\d+)$/);

/** Checkpoint folders being written (`step-N.tmp`), or left half-written by an engine that failed. */
export const halfWrittenCheckpoints = (folders: JobFolders) => checkpointFoldersNamed(folders.checkpoints, /^step-(\d+)\.tmp$/);

function checkpointFoldersNamed(folder: string, pattern: RegExp): CheckpointFolder[] {
  if (!fs.existsSync(folder)) return [];
  return fs
    .readdirSync(folder)
    .flatMap((name) => {
      const match = pattern.exec(name);
      return match ? [{ step: Number(match[1]), path: path.join(folder, name) }] : [];
    })
    .sort((a, b) => a.step - b.step);
}

export const hasTrainingState = (folder: CheckpointFolder) => fs.existsSync(path.join(folder.path, TRAINING_STATE));

export async function dropTrainingState(folders: CheckpointFolder[]): Promise<void> {
  await Promise.all(folders.map((folder) => fsp.rm(path.join(folder.path, TRAINING_STATE), { force: true })));
}

export async function removeFolders(folders: string[]): Promise<void> {
  await Promise.all(folders.map((folder) => fsp.rm(folder, { recursive: true, force: true })));
}
