export type JobStatus = 'validating_files' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'paused';

/** The legal moves of a job; anything else is refused, whoever asks. */
const NEXT: Record<JobStatus, readonly JobStatus[]> = {
  validating_files: ['queued', 'failed', 'cancelled'],
  queued: ['running', 'paused', 'failed', 'cancelled'],
  // running -> queued: the server restarted under the job, which runs again from its last checkpoint.
  running: ['succeeded', 'failed', 'cancelled', 'paused', 'queued'],
  paused: ['queued', 'cancelled'],
  succeeded: [],
  failed: [],
  cancelled: [],
};

export const canMove = (from: JobStatus, to: JobStatus) => NEXT[from].includes(to);

export const isFinished = (status: JobStatus) => NEXT[status].length === 0;

/** The statuses a job can still leave. */
export const UNFINISHED = (Object.keys(NEXT) as JobStatus[]).filter((status) => !isFinished(status));

/**
 * What a person may ask of a job, from where. Narrower than the machine: a restart may move a
 * running job back to queued, but resume is only for a paused one.
 */
export const USER_ACTIONS = {
  cancel: {
    from: ['validating_files', 'queued', 'running', 'paused'],
    to: 'cancelled',
    done: 'cancelled',
    message: 'Fine-tuning job cancelled',
  },
  pause: { from: ['queued', 'running'], to: 'paused', done: 'paused', message: 'Fine-tuning job paused' },
  resume: {
    from: ['paused'],
    to: 'queued',
    done: 'resumed',
    message: 'Fine-tuning job resumed, moving job to queued state',
  },
} as const satisfies Record<string, { from: readonly JobStatus[]; to: JobStatus; done: string; message: string }>;

export type UserAction = keyof typeof USER_ACTIONS;
