import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { DatasetReport } from '../datasets/doctor.js';
import type { TrainingSpec } from '../engine/protocol.js';
import { type TrainingDefaults, trainingDefaults } from '../models/training-defaults.js';
import { type ResolvedHyperparameters, learningRate, resolveHyperparameters } from './hyperparameters.js';
import type { JobFolders } from './job-folders.js';
import { type FineTuningJob, type Method, methodHyperparameters } from './jobs.js';
import type { StartingPoint } from './starting-point.js';

/** What a job trains, in numbers: its hyperparameters with "auto" resolved, and its length in steps. */
export interface TrainingPlan {
  resolved: ResolvedHyperparameters;
  defaults: TrainingDefaults;
  stepsPerEpoch: number;
  totalSteps: number;
}

export function planTraining(method: Method, start: StartingPoint, report: DatasetReport): TrainingPlan {
  const defaults = trainingDefaults(start.root.path);
  const resolved = resolveHyperparameters(methodHyperparameters(method), report.n_examples, defaults, start.adapter);
  const stepsPerEpoch = Math.ceil(report.n_examples / resolved.batch_size);
  return { resolved, defaults, stepsPerEpoch, totalSteps: stepsPerEpoch * resolved.n_epochs };
}

/**
 * Writes the engine's spec into the run's scratch folder. A run resumed on the worker that started
 * it keeps the spec it started with (same schedule, same curve); where its inputs are is this run's.
 */
export async function writeTrainingSpec(options: {
  job: FineTuningJob;
  method: Method;
  start: StartingPoint;
  report: DatasetReport;
  plan: TrainingPlan;
  folders: JobFolders;
  /** Folders on this host holding the training arrays and the checkpoint continued from (folder-store.ts `open`). */
  inputs: { train: string; valid: string | null; resumeFrom: string | null };
  /** Cores for this engine when several share the host; all of them when null. */
  threads: number | null;
}): Promise<TrainingSpec> {
  const { job, method, start, report, plan, folders, inputs, threads } = options;
  const { resolved, defaults, totalSteps } = plan;
  const written = inputs.resumeFrom && fs.existsSync(folders.spec) ? (JSON.parse(fs.readFileSync(folders.spec, 'utf8')) as TrainingSpec) : null;
  const valid = inputs.valid;
  const where = { train_data: inputs.train, valid_data: valid, output_dir: folders.output, work_dir: folders.work, resume_from: inputs.resumeFrom };
  const spec: TrainingSpec = written ? { ...written, ...where } : {
    // The model's own engine settings first: the fields below are the runner's to set.
    ...defaults.engine,
    model: start.weights,
    base_model_name: start.weightsModel,
    init_adapter: start.adapter?.path ?? null,
    method: method.type,
    ...(resolved.beta === undefined ? {} : { dpo: { beta: resolved.beta } }),
    training: resolved.full ? 'full' : 'lora',
    ...(resolved.full ? {} : { lora: { rank: resolved.lora_rank, alpha: resolved.lora_alpha } }),
    n_epochs: resolved.n_epochs,
    batch_size: resolved.batch_size,
    learning_rate: learningRate(resolved, defaults),
    seq_len: sequenceLength(report, start.root.name),
    warmup_steps: Math.ceil(defaults.warmup_ratio * totalSteps),
    lr_schedule: defaults.lr_schedule,
    seed: job.seed,
    // About ten validation points along the curve, and one at each epoch's end.
    eval_every: valid ? Math.max(1, Math.floor(totalSteps / 10)) : 0,
    ...(threads !== null ? { threads } : {}),
    ...where,
  };
  await fsp.writeFile(folders.spec, `${JSON.stringify(spec, null, 2)}\n`);
  return spec;
}

/** Packed rows hold the longest example whole; shorter rows waste nothing (attention sees only real tokens). */
function sequenceLength(report: DatasetReport, model: string): number {
  const longest = report.token_counts[model]?.distributions.total_tokens?.max ?? report.context;
  return Math.min(report.context, Math.max(longest, 512));
}
