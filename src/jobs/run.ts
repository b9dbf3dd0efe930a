import type { DoneEvent, StepMetrics } from '../engine/protocol.js';
import type { TrainingProcess } from '../engine/training-process.js';
import type { DiskSpace } from '../files/disk.js';
import type { FileService } from '../files/files.js';
import type { FolderStore } from '../files/folder-store.js';
import type { ModelService } from '../models/models.js';
import type { OrgService } from '../orgs/orgs.js';
import type { CheckpointSpace } from './checkpoint-space.js';
import type { JobFolders } from './job-folders.js';
import type { FineTuningJob, JobService } from './jobs.js';
import type { Fence } from './leases.js';
import type { StoredFolders } from './stored-folders.js';

/** The services a run records through: the same ones the API serves from. */
export interface RunnerServices {
  jobs: JobService;
  models: ModelService;
  files: FileService;
  orgs: OrgService;
  disk: DiskSpace;
  /** Where training arrays, checkpoints and fine-tunes are kept for every host, and the records naming them. */
  folders: FolderStore;
  stored: StoredFolders;
}

export type Metrics = Partial<StepMetrics> & { step: number };

/** Why a run failed; a `plain` message is the job's whole message, without the engine's last lines. */
export interface JobError {
  code: string;
  message: string;
  plain?: boolean;
}

/** One engine process training one job, and what the runner learned from its events so far. */
export interface Run {
  job: FineTuningJob;
  /** Its scratch folder on this worker. */
  folders: JobFolders;
  /** Every write for the job goes through the lease that holds it. */
  fence: Fence;
  /** Null until it is started (a checkpoint may be recorded first). */
  engine: TrainingProcess | null;
  /** Why the runner is stopping the engine: what it says afterwards is recorded accordingly (after `lost`, nothing). */
  stopping: 'cancel' | 'pause' | 'shutdown' | 'lost' | null;
  /** The runner itself is moving the job to its end; its own move is not a person's. */
  finishing: boolean;
  finished: Promise<void>;
  fineTunedModel: string;
  /** What its models are recorded as made from (starting-point.ts: the weights a LoRA adapter sits on, or the lineage's base). */
  baseModel: string;
  /** What its checkpoints take on disk, for the messages of a full disk. */
  space: CheckpointSpace;
  totalSteps: number;
  /** The step this run started from (the checkpoint it resumed, or 0). */
  startStep: number;
  /** The newest metrics event, so an evaluation of its step can join it. */
  lastMetrics: { id: string; data: Metrics } | null;
  lastCheckpointStep: number;
  /** The step of the job's resume point in the store (the checkpoint it started from, or a newer one it published). */
  resumeStep: number;
  lastEstimateAt: number;
  error: JobError | null;
  done: DoneEvent | null;
  /** The step the engine saved when it was stopped (`cancelled` event), by the runner or not. */
  stoppedAtStep: number | null;
}
