import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/**
 * Where one job's run keeps its files on the worker training it: a scratch folder of that worker's
 * own, never shared, with the engine's spec, pid and log, and the checkpoints and model the engine
 * writes. What is kept of them enters the folder store through the run's lease (checkpoint-models.ts).
 */
export interface JobFolders {
  work: string;
  spec: string;
  pid: string;
  log: string;
  checkpoints: string;
  output: string;
  /** Inputs fetched from a store that is not a local folder. */
  inputs: string;
}

export function jobFolders(scratch: string, jobId: string): JobFolders {
  const work = path.join(scratch, jobId);
  return {
    work,
    spec: path.join(work, 'spec.json'),
    pid: path.join(work, 'engine.pid'),
    log: path.join(work, 'engine.log'),
    checkpoints: path.join(work, 'checkpoints'),
    output: path.join(work, 'output'),
    inputs: path.join(work, 'inputs'),
  };
}

/** The engine's file in a checkpoint folder that holds the optimizer state (engine/tunelab_engine/checkpoint.py). */
export const TRAINING_STATE = 'training_state.pt';

export interface CheckpointFolder {
  step: number;
  path: string;
}

/** Checkpoint folders being written (`step-N.tmp`), or left half-written by an engine that failed. */
export function halfWrittenCheckpoints(folders: JobFolders): CheckpointFolder[] {
  if (!fs.existsSync(folders.checkpoints)) return [];
  return fs
    .readdirSync(folders.checkpoints)
    .flatMap((name) => {
      const match = /^step-(\d+)\.tmp$/.exec(name);
      return match ? [{ step: Number(match[1]), path: path.join(folders.checkpoints, name) }] : [];
    })
    .sort((a, b) => a.step - b.step);
}

/**
 * Empties the run's scratch of what an engine wrote there (checkpoints and models nobody recorded,
 * inputs fetched); the log stays, and so does the spec a run resumed here starts from unless the
 * job is over.
 */
export async function clearScratch(folders: JobFolders, over = false): Promise<void> {
  const doomed = [folders.checkpoints, folders.output, folders.inputs, ...(over ? [folders.spec] : [])];
  await Promise.all(doomed.map((folder) => fsp.rm(folder, { recursive: true, force: true })));
}

export async function removeFolders(folders: string[]): Promise<void> {
  await Promise.all(folders.map((folder) => fsp.rm(folder, { recursive: true, force: true })));
}
