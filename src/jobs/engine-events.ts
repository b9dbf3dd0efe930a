import { type EngineEvent, type EvalEvent, EVAL_FIELDS, STEP_FIELDS, type StepEvent } from '../engine/protocol.js';
import { unixSeconds } from '../ids.js';
import type { CheckpointModels } from './checkpoint-models.js';
import type { JobService } from './jobs.js';
import type { Metrics, Run } from './run.js';

/** How often `estimated_finish` is rewritten while a job runs. */
const ESTIMATE_EVERY_MS = 2000;

/**
 * Turns what a training engine says into the job's record: steps into metrics events, evaluations
 * into the step they were made at, checkpoints into the folder store (epoch ones into models); the
 * rest (how it ended) is noted on the run for the runner to act on once the engine exits.
 */
export class EngineEvents {
  constructor(
    private readonly jobs: JobService,
    private readonly checkpoints: CheckpointModels,
  ) {}

  async record(run: Run, event: EngineEvent): Promise<void> {
    switch (event.type) {
      case 'started':
        run.totalSteps = Number(event.total_steps);
        return;
      case 'step':
        return this.step(run, event);
      case 'eval':
        return this.evaluation(run, event);
      case 'checkpoint': {
        // A cancelled job keeps no checkpoint; the last epoch's becomes the fine-tuned model when the engine is done.
        const step = Number(event.step);
        if (run.stopping === 'cancel' || run.stopping === 'lost' || step <= run.resumeStep) return;
        return this.checkpoints.publish(run, step, String(event.path), { metrics: run.lastMetrics?.data.step === step ? run.lastMetrics.data : undefined });
      }
      case 'cancelled': {
        // The checkpoint it saved as it stopped is where a pause, a shutdown or a stop from outside continues.
        const step = Number(event.step);
        run.stoppedAtStep = step;
        if (run.stopping === 'cancel' || run.stopping === 'lost' || step <= run.resumeStep) return;
        return this.checkpoints.publish(run, step, String(event.path), null);
      }
      case 'done':
        run.done = event;
        return;
      case 'error':
        run.error = { code: String(event.code), message: String(event.message) };
        return;
    }
  }

  private async step(run: Run, event: StepEvent): Promise<void> {
    const step = Number(event.step);
    // A run resumed from a checkpoint repeats the steps after it that were already recorded.
    if (run.lastMetrics && step <= run.lastMetrics.data.step) return;
    const data: Metrics = { step, total_steps: Number(event.total_steps) };
    for (const key of STEP_FIELDS) if (key in event) data[key] = event[key];
    // From the engine's own clock, so a backlog of events here does not skew it.
    const now = typeof event.time === 'number' ? event.time * 1000 : Date.now();
    const elapsed = Number(event.elapsed_s);
    let finishAt: number | null = null;
    if (run.stopping === null && now - run.lastEstimateAt >= ESTIMATE_EVERY_MS && elapsed > 0) {
      run.lastEstimateAt = now;
      const perStep = (elapsed * 1000) / (step - run.startStep);
      finishAt = unixSeconds(now + perStep * (run.totalSteps - step));
    }
    // One fenced transaction for the step and, now and then, the finish it points to.
    const id = await run.fence.write(async (trx) => {
      const recorded = await this.jobs.recordStep(run.job.id, { message: stepMessage(data), data }, trx);
      if (finishAt !== null) await this.jobs.setEstimatedFinish(run.job.id, finishAt, trx);
      return recorded;
    });
    run.lastMetrics = { id, data };
  }

  /** An evaluation follows the step it was made at: it joins that step's metrics event. */
  private async evaluation(run: Run, event: EvalEvent): Promise<void> {
    if (!run.lastMetrics || run.lastMetrics.data.step !== Number(event.step)) return;
    const data: Metrics = { ...run.lastMetrics.data };
    for (const key of EVAL_FIELDS) if (key in event) data[key] = event[key];
    const eventId = run.lastMetrics.id;
    await run.fence.write((trx) => this.jobs.updateStep(run.job.id, eventId, { message: stepMessage(data), data }, trx));
    run.lastMetrics = { id: run.lastMetrics.id, data };
  }
}

function stepMessage(data: Metrics): string {
  const loss = (value: unknown) => (typeof value === 'number' ? value.toFixed(4) : 'n/a');
  let message = `Step ${data.step}/${data.total_steps}: training loss=${loss(data.train_loss)}`;
  if ('valid_loss' in data) message += `, validation loss=${loss(data.valid_loss)}`;
  if ('train_reward_accuracy' in data) message += `, reward accuracy=${loss(data.train_reward_accuracy)}, margin=${loss(data.train_reward_margin)}`;
  return message;
}
