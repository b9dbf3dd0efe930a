import { randomInt } from 'node:crypto';
import { type Selectable, sql } from 'kysely';
import type {
  FineTuningJob as OpenAIFineTuningJob,
  FineTuningJobEvent,
} from 'openai/resources/fine-tuning/jobs/jobs';
import type { FineTuningJobCheckpoint } from 'openai/resources/fine-tuning/jobs/checkpoints';
import type { DatasetReport } from '../datasets/doctor.js';
import type { StepMetrics } from '../engine/protocol.js';
import { ServiceError, invalidRequest, noSuch } from '../errors.js';
import type { FileService } from '../files/files.js';
import { newId, unixSeconds } from '../ids.js';
import { firstExampleFormat } from '../datasets/file-format.js';
import type { BaseModelRegistry } from '../models/base-models.js';
import type { ModelService } from '../models/models.js';
import { type Page, type PageRequest, mapPage, pageBySeq } from '../store/pages.js';
import type { JobCheckpointTable, JobEventTable, JobTable } from '../store/schema.js';
import { inEventOrder } from '../store/event-order.js';
import type { Db } from '../store/store.js';
import type { CreateJobRequest, DpoHyperparameters, SupervisedHyperparameters } from './job-request.js';
import { type StartingPoint, checkContinuation, startingPoint } from './starting-point.js';
import { type JobStatus, type UserAction, USER_ACTIONS, canMove, isFinished } from './status.js';

/** OpenAI's job object, with `paused` among the statuses as the spec has it. */
export type FineTuningJob = Omit<OpenAIFineTuningJob, 'status'> & {
  status: JobStatus;
  user_provided_suffix: string | null;
};

export type { StepMetrics };

/** A step as the runner records it: the metrics and the event's words for them. */
export interface StepRecord {
  message: string;
  data: Record<string, unknown> & { step: number };
}

export interface NewEvent {
  level?: JobEventTable['level'];
  message: string;
  type?: JobEventTable['type'];
  data?: Record<string, unknown> | null;
}

/** A job as the API sees it: the lease and stored-folder columns are the runners' (src/jobs/leases.ts, stored-folders.ts). */
type JobRow = Omit<
  Selectable<JobTable>,
  | 'seq'
  | 'lease_worker'
  | 'lease_token'
  | 'lease_expires_at'
  | 'memory_needed'
  | 'memory_sharded'
  | 'train_arrays'
  | 'valid_arrays'
  | 'resume_step'
  | 'resume_location'
>;

/** What a move may change besides the status. */
export type JobChanges = Partial<
  Pick<JobRow, 'error' | 'fine_tuned_model' | 'trained_tokens' | 'result_files' | 'estimated_finish'> & { method: Method; memory_needed: number; memory_sharded: number }
>;

const AUTO_HYPERPARAMETERS = { batch_size: 'auto', learning_rate_multiplier: 'auto', n_epochs: 'auto' } as const;

export class JobService {
  private readonly listeners: Array<(job: FineTuningJob) => void> = [];

  constructor(
    private readonly db: Db,
    private readonly files: FileService,
    private readonly baseModels: BaseModelRegistry,
    private readonly models: ModelService,
  ) {}

  async create(orgId: string, request: CreateJobRequest): Promise<FineTuningJob> {
    const method = normalizeMethod(request);
    const start = await this.startingPoint(orgId, request.model);
    checkContinuation(start, methodHyperparameters(method), `method.${method.type}.hyperparameters`);
    await this.checkTrainingData(orgId, request.training_file, 'training_file', method.type);
    if (request.validation_file) await this.checkTrainingData(orgId, request.validation_file, 'validation_file', method.type);
    if (request.integrations?.length) {
      throw invalidRequest(
        `Integrations (${request.integrations.map((i) => i.type).join(', ')}) are not supported: tunelab sends no training data off this server.`,
        'integrations',
      );
    }

    const now = unixSeconds();
    const job: JobRow = {
      id: newId('ftjob-'),
      org_id: orgId,
      model: request.model,
      training_file: request.training_file,
      validation_file: request.validation_file ?? null,
      suffix: request.suffix ?? null,
      seed: request.seed ?? randomInt(0, 2147483647),
      status: 'validating_files',
      method: JSON.stringify(method),
      error: null,
      fine_tuned_model: null,
      trained_tokens: null,
      result_files: '[]',
      estimated_finish: null,
      metadata: request.metadata ? JSON.stringify(request.metadata) : null,
      created_at: now,
      finished_at: null,
    };
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('jobs').values(job).execute();
      const pairs = Object.entries(request.metadata ?? {});
      if (pairs.length) {
        await trx.insertInto('job_metadata').values(pairs.map(([key, value]) => ({ job_id: job.id, key, value }))).execute();
      }
      const events = [
        { message: `Created fine-tuning job: ${job.id}` },
        {
          message: job.validation_file
            ? `Validating training file: ${job.training_file} and validation file: ${job.validation_file}`
            : `Validating training file: ${job.training_file}`,
          data: { status: 'validating_files' },
        },
      ].map((event) => eventRow(job.id, event, now));
      await inEventOrder(trx, (inTurn) => inTurn.insertInto('job_events').values(events).execute());
    });
    return this.changed(toJob(job));
  }

  /**
   * Called with the job after it is created and after each move, once committed: the pipeline
   * takes new jobs at once and drops work on a job that was cancelled under it.
   */
  onChange(listener: (job: FineTuningJob) => void): void {
    this.listeners.push(listener);
  }

  private changed(job: FineTuningJob): FineTuningJob {
    for (const listener of this.listeners) listener(job);
    return job;
  }

  /** What the job's `model` trains from: a base model, or the organization's fine-tune or checkpoint it continues. */
  startingPoint(orgId: string, model: string): Promise<StartingPoint> {
    return startingPoint(this.models, this.baseModels, orgId, model);
  }

  /** Jobs in a status, oldest first, across organizations: the pipeline's work list. */
  async withStatus(status: JobStatus): Promise<FineTuningJob[]> {
    const rows = await this.db.selectFrom('jobs').selectAll().where('status', '=', status).orderBy('seq', 'asc').execute();
    return rows.map(toJob);
  }

  async saveValidationReport(jobId: string, report: DatasetReport): Promise<void> {
    const row = { job_id: jobId, created_at: unixSeconds(), report: JSON.stringify(report) };
    await this.db
      .insertInto('job_validation_reports')
      .values(row)
      .onConflict((conflict) => conflict.column('job_id').doUpdateSet({ created_at: row.created_at, report: row.report }))
      .execute();
  }

  /** The dataset doctor's report on the job's files, once validation has run. */
  async validationReport(orgId: string, jobId: string): Promise<Record<string, unknown>> {
    const job = await this.row(orgId, jobId);
    const row = await this.db.selectFrom('job_validation_reports').select(['report', 'created_at']).where('job_id', '=', jobId).executeTakeFirst();
    if (!row) {
      throw new ServiceError('not_found', `Job ${jobId} has no validation report yet: it is ${job.status}.`, {
        param: 'fine_tuning_job_id',
        code: 'validation_report_not_ready',
      });
    }
    return { object: 'fine_tuning.job.validation_report', fine_tuning_job_id: jobId, created_at: row.created_at, ...JSON.parse(row.report) };
  }

  /** The dataset doctor's report a queued job was validated with: what its training is planned from. */
  async trainingReport(jobId: string): Promise<DatasetReport> {
    const row = await this.db.selectFrom('job_validation_reports').select('report').where('job_id', '=', jobId).executeTakeFirst();
    if (!row) throw new Error(`job ${jobId} has no validation report: its files were never validated`);
    // Written by saveValidationReport from the doctor's own type.
    return JSON.parse(row.report) as DatasetReport;
  }

  async list(
    orgId: string,
    request: PageRequest & { metadata?: Record<string, string> | undefined },
  ): Promise<Page<FineTuningJob>> {
    let scope = this.db.selectFrom('jobs').selectAll().where('org_id', '=', orgId);
    for (const [key, value] of Object.entries(request.metadata ?? {})) {
      scope = scope.where(({ exists, selectFrom }) =>
        exists(
          selectFrom('job_metadata')
            .select('job_id')
            .whereRef('job_metadata.job_id', '=', 'jobs.id')
            .where('key', '=', key)
            .where('value', '=', value),
        ),
      );
    }
    return mapPage(await pageBySeq(scope, request), toJob);
  }

  async get(orgId: string, id: string): Promise<FineTuningJob> {
    return toJob(await this.row(orgId, id));
  }

  /** A job in any organization: for the runners, which train them all. */
  async byId(id: string): Promise<FineTuningJob> {
    const row = await this.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw noSuch('FineTuningJob', id, 'fine_tuning_job_id');
    return toJob(row);
  }

  /** Whether the job has ended (succeeded, failed or cancelled), as `db` (a transaction's) sees it. */
  async hasEnded(id: string, db: Db = this.db): Promise<boolean> {
    const row = await db.selectFrom('jobs').select('status').where('id', '=', id).executeTakeFirst();
    return row !== undefined && isFinished(row.status as JobStatus);
  }

  /** Cancel, pause or resume, as the person asked; refused with the reason when the job cannot. */
  async act(orgId: string, id: string, action: UserAction): Promise<FineTuningJob> {
    const job = await this.row(orgId, id);
    const { from, to, done, message } = USER_ACTIONS[action];
    const status = job.status as JobStatus;
    if (!(from as readonly JobStatus[]).includes(status)) {
      throw invalidRequest(
        `Job ${id} is ${status}: only a job that is ${from.join(' or ')} can be ${done}.`,
        'fine_tuning_job_id',
        'invalid_job_status',
      );
    }
    return this.move(job.id, status, to, { message });
  }

  /**
   * Moves a job along the state machine and records why, in one transaction. The update is
   * conditional on the status read, so two movers racing cannot both win.
   */
  async move(
    jobId: string,
    from: JobStatus,
    to: JobStatus,
    event: NewEvent | NewEvent[],
    changes: JobChanges = {},
    /** More writes that must commit with the move or not at all (the models a finished job made). */
    within?: (trx: Db) => Promise<void>,
  ): Promise<FineTuningJob> {
    if (!canMove(from, to)) throw new Error(`A job cannot go from ${from} to ${to}.`);
    const now = unixSeconds();
    const moved = await this.db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable('jobs')
        .set({
          ...changes,
          method: changes.method ? JSON.stringify(changes.method) : undefined,
          status: to,
          // Only a running job has an estimate.
          ...(to === 'running' ? {} : { estimated_finish: null }),
          ...(isFinished(to) ? { finished_at: now } : {}),
        })
        .where('id', '=', jobId)
        .where('status', '=', from)
        .returningAll()
        .executeTakeFirst();
      // 409: the SDK retries, and the retry reads the job as it now is.
      if (!updated) throw new ServiceError('conflict', `Job ${jobId} was changed by another request while it was ${from}.`);
      await within?.(trx);
      // The move's last event carries the new status: the dashboard's timeline reads it, not the words.
      const events = Array.isArray(event) ? event : [event];
      const told = events.map((e, i) => (i === events.length - 1 ? { ...e, data: { ...e.data, status: to } } : e));
      await inEventOrder(trx, (inTurn) => inTurn.insertInto('job_events').values(told.map((e) => eventRow(jobId, e, now))).execute());
      return toJob(updated);
    });
    return this.changed(moved);
  }

  /** Adds an event; returns its id. */
  async appendEvent(jobId: string, event: NewEvent, db: Db = this.db): Promise<string> {
    const row = eventRow(jobId, event, unixSeconds());
    await inEventOrder(db, (trx) => trx.insertInto('job_events').values(row).execute());
    return row.id;
  }

  /** A training step: its metrics event, and its row in the step-keyed metrics. Returns the event's id. */
  async recordStep(jobId: string, step: StepRecord, db: Db = this.db): Promise<string> {
    const row = eventRow(jobId, { type: 'metrics', message: step.message, data: step.data }, unixSeconds());
    await inEventOrder(db, async (trx) => {
      await trx.insertInto('job_events').values(row).execute();
      await trx.insertInto('job_metrics').values({ job_id: jobId, step: step.data.step, event_id: row.id, data: row.data! }).execute();
    });
    return row.id;
  }

  /** Rewrites a step: its metrics event and row gain the validation loss computed after it. */
  async updateStep(jobId: string, eventId: string, step: StepRecord, db: Db = this.db): Promise<void> {
    const data = JSON.stringify(step.data);
    const update = async (trx: Db) => {
      await trx.updateTable('job_events').set({ message: step.message, data }).where('id', '=', eventId).execute();
      await trx.updateTable('job_metrics').set({ data }).where('job_id', '=', jobId).where('step', '=', step.data.step).execute();
    };
    await (db.isTransaction ? update(db) : db.transaction().execute(update));
  }

  /** The job's steps from `fromStep` on, oldest first, with their events' ids: the loss curve. */
  async metrics(jobId: string, fromStep = 0): Promise<Array<{ id: string; data: Record<string, unknown> & { step: number } }>> {
    const rows = await this.db
      .selectFrom('job_metrics')
      .select(['event_id', 'data'])
      .where('job_id', '=', jobId)
      .where('step', '>=', fromStep)
      .orderBy('step', 'asc')
      .execute();
    return rows.map((row) => ({ id: row.event_id, data: JSON.parse(row.data) }));
  }

  /** The job's newest recorded step, if any. */
  async lastStep(jobId: string): Promise<{ id: string; data: Record<string, unknown> & { step: number } } | null> {
    const row = await this.db
      .selectFrom('job_metrics')
      .select(['event_id', 'data'])
      .where('job_id', '=', jobId)
      .orderBy('step', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? { id: row.event_id, data: JSON.parse(row.data) } : null;
  }

  /**
   * Ours: the loss curve for a person, steps `fromStep` and later. From, not after: an evaluation
   * joins its step's metrics after the step was recorded, so a poller asks again from the last step
   * it holds and replaces that step. With `maxPoints`, a longer stretch is thinned to every k-th step
   * counted back from the newest (so it is always there), and the evaluated steps: a chart of a long
   * job needs no more points than it has pixels.
   */
  async stepMetrics(orgId: string, jobId: string, fromStep = 0, maxPoints?: number): Promise<StepMetrics[]> {
    await this.row(orgId, jobId);
    const last = maxPoints === undefined ? undefined : (await this.lastStep(jobId))?.data.step;
    // Steps are numbered from 1, one row each.
    const every = last === undefined ? 1 : Math.ceil((last - Math.max(fromStep, 1) + 1) / maxPoints!);
    let query = this.db.selectFrom('job_metrics').select('data').where('job_id', '=', jobId).where('step', '>=', fromStep);
    if (every > 1) {
      query = query.where((eb) => eb.or([eb(sql<number>`(${last} - step) % ${every}`, '=', 0), eb('data', 'like', '%"valid_loss"%')]));
    }
    // The runner writes these from the engine's step events, in this shape.
    return (await query.orderBy('step', 'asc').execute()).map((row) => JSON.parse(row.data) as StepMetrics);
  }

  /** While the job runs: when it is expected to finish, from the speed measured so far. */
  async setEstimatedFinish(jobId: string, at: number, db: Db = this.db): Promise<void> {
    await db.updateTable('jobs').set({ estimated_finish: at }).where('id', '=', jobId).where('status', '=', 'running').execute();
  }

  /** The job's checkpoints, oldest step first. */
  async checkpoints(jobId: string, db: Db = this.db): Promise<FineTuningJobCheckpoint[]> {
    const rows = await db.selectFrom('job_checkpoints').selectAll().where('job_id', '=', jobId).orderBy('step_number', 'asc').execute();
    return rows.map(toCheckpoint);
  }

  async removeCheckpoint(checkpointId: string, db: Db = this.db): Promise<void> {
    await db.deleteFrom('job_checkpoints').where('id', '=', checkpointId).execute();
  }

  /** Records a checkpoint the engine saved, under the model name it can be used by. */
  async addCheckpoint(
    jobId: string,
    checkpoint: { stepNumber: number; model: string; metrics: Record<string, unknown> },
    db: Db = this.db,
  ): Promise<FineTuningJobCheckpoint> {
    const row = {
      id: newId('ftckpt_'),
      job_id: jobId,
      created_at: unixSeconds(),
      fine_tuned_model_checkpoint: checkpoint.model,
      step_number: checkpoint.stepNumber,
      metrics: JSON.stringify(checkpoint.metrics),
    };
    await db.insertInto('job_checkpoints').values(row).execute();
    return toCheckpoint(row);
  }

  /** The job's events, newest first; `type` keeps one kind (ours: a long job's messages without its steps). */
  async listEvents(orgId: string, jobId: string, request: PageRequest & { type?: JobEventTable['type'] | undefined }): Promise<Page<FineTuningJobEvent>> {
    await this.row(orgId, jobId);
    let scope = this.db.selectFrom('job_events').selectAll().where('job_id', '=', jobId);
    if (request.type) scope = scope.where('type', '=', request.type);
    return mapPage(await pageBySeq(scope, request), toEvent);
  }

  async listCheckpoints(orgId: string, jobId: string, request: PageRequest): Promise<Page<FineTuningJobCheckpoint>> {
    await this.row(orgId, jobId);
    return mapPage(
      await pageBySeq(this.db.selectFrom('job_checkpoints').selectAll().where('job_id', '=', jobId), request),
      toCheckpoint,
    );
  }

  private async row(orgId: string, id: string): Promise<JobRow> {
    const row = await this.db.selectFrom('jobs').selectAll().where('id', '=', id).where('org_id', '=', orgId).executeTakeFirst();
    if (!row) throw noSuch('FineTuningJob', id, 'fine_tuning_job_id');
    return row;
  }

  private async checkTrainingData(orgId: string, fileId: string, param: 'training_file' | 'validation_file', method: Method['type']) {
    const file = await this.files.checked(orgId, fileId, param).catch((error: unknown) => {
      if (error instanceof ServiceError && error.kind === 'not_found') {
        throw invalidRequest(`Invalid ${param}: no such file ${fileId}.`, param, `invalid_${param}`);
      }
      throw error;
    });
    if (file.purpose !== 'fine-tune') {
      throw invalidRequest(
        `Invalid ${param}: ${fileId} was uploaded with purpose '${file.purpose}'; fine-tuning needs purpose 'fine-tune'.`,
        param,
        `invalid_${param}`,
      );
    }
    if (file.status === 'error') {
      throw invalidRequest(`Invalid ${param}: ${fileId} cannot be used for fine-tuning. ${file.status_details}`, param, `invalid_${param}`);
    }
    // The method and the file must agree: DPO learns from preference pairs, supervised fine-tuning from examples.
    const format = await firstExampleFormat(this.files.bytes(orgId, fileId));
    if (method === 'dpo' && format !== null && format !== 'preference') {
      throw invalidRequest(
        `Invalid ${param}: ${fileId} holds ${format === 'chat' ? 'chat' : 'prompt/completion'} examples, but method 'dpo' trains on preference pairs ({"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}).`,
        param,
        `invalid_${param}`,
      );
    }
    if (method === 'supervised' && format === 'preference') {
      throw invalidRequest(
        `Invalid ${param}: ${fileId} holds preference pairs (DPO data); supervised fine-tuning needs chat or prompt/completion examples. Use method {"type": "dpo"} to train on preference pairs.`,
        param,
        `invalid_${param}`,
      );
    }
  }
}

export type Method =
  | { type: 'supervised'; supervised: { hyperparameters: SupervisedHyperparameters } }
  | { type: 'dpo'; dpo: { hyperparameters: DpoHyperparameters } };

export const methodHyperparameters = (method: Method): SupervisedHyperparameters | DpoHyperparameters =>
  method.type === 'dpo' ? method.dpo.hyperparameters : method.supervised.hyperparameters;

/**
 * One place for the hyperparameters: the legacy top-level field and `method` say the same
 * thing, and the job shows both. Methods the engine cannot train yet are refused here.
 */
function normalizeMethod(request: CreateJobRequest): Method {
  const type = request.method?.type ?? 'supervised';
  if (type === 'dpo') {
    if (request.hyperparameters) {
      throw invalidRequest("The deprecated top-level 'hyperparameters' are supervised fine-tuning's; give DPO's in 'method.dpo.hyperparameters'.", 'hyperparameters');
    }
    const given = request.method?.type === 'dpo' ? request.method.dpo?.hyperparameters : undefined;
    return { type: 'dpo', dpo: { hyperparameters: { beta: 'auto', ...AUTO_HYPERPARAMETERS, ...given } } };
  }
  if (type !== 'supervised') {
    throw invalidRequest(
      `Fine-tuning method '${type}' is not supported yet: tunelab's engine trains 'supervised' and 'dpo' fine-tunes.`,
      'method.type',
      'unsupported_method',
    );
  }
  const fromMethod = request.method?.type === 'supervised' ? request.method.supervised?.hyperparameters : undefined;
  if (fromMethod && request.hyperparameters) {
    throw invalidRequest(
      "Give hyperparameters in 'method.supervised.hyperparameters' or in the deprecated top-level 'hyperparameters', not both.",
      'hyperparameters',
    );
  }
  return { type: 'supervised', supervised: { hyperparameters: { ...AUTO_HYPERPARAMETERS, ...(fromMethod ?? request.hyperparameters) } } };
}

function eventRow(jobId: string, event: NewEvent, createdAt: number) {
  return {
    id: newId('ftevent-'),
    job_id: jobId,
    created_at: createdAt,
    level: event.level ?? 'info',
    message: event.message,
    type: event.type ?? 'message',
    data: event.data ? JSON.stringify(event.data) : null,
  };
}

function toJob(row: JobRow): FineTuningJob {
  const method = JSON.parse(row.method) as Method;
  return {
    id: row.id,
    object: 'fine_tuning.job',
    created_at: row.created_at,
    finished_at: row.finished_at,
    model: row.model,
    fine_tuned_model: row.fine_tuned_model,
    organization_id: row.org_id,
    status: row.status as JobStatus,
    error: row.error === null ? null : JSON.parse(row.error),
    hyperparameters: methodHyperparameters(method),
    method,
    result_files: JSON.parse(row.result_files),
    trained_tokens: row.trained_tokens,
    training_file: row.training_file,
    validation_file: row.validation_file,
    seed: row.seed,
    estimated_finish: row.estimated_finish,
    integrations: [],
    metadata: row.metadata === null ? null : JSON.parse(row.metadata),
    user_provided_suffix: row.suffix,
  };
}

const toEvent = (e: Selectable<JobEventTable>): FineTuningJobEvent => ({
  id: e.id,
  object: 'fine_tuning.job.event',
  created_at: e.created_at,
  level: e.level,
  message: e.message,
  type: e.type,
  data: e.data === null ? {} : JSON.parse(e.data),
});

const toCheckpoint = (c: Omit<Selectable<JobCheckpointTable>, 'seq'>): FineTuningJobCheckpoint => ({
  id: c.id,
  object: 'fine_tuning.job.checkpoint',
  created_at: c.created_at,
  fine_tuned_model_checkpoint: c.fine_tuned_model_checkpoint,
  fine_tuning_job_id: c.job_id,
  step_number: c.step_number,
  metrics: JSON.parse(c.metrics),
});
