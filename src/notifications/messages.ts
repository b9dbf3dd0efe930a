import type { FineTuningJob } from '../jobs/jobs.js';

export type FinishedStatus = 'succeeded' | 'failed' | 'cancelled';
export type JobEventType = `fine_tuning.job.${FinishedStatus}`;

/** The webhook body, shaped as OpenAI's `fine_tuning.job.*` webhook events are. */
export interface JobWebhookEvent {
  object: 'event';
  id: string;
  type: JobEventType;
  created_at: number;
  data: { id: string };
}

export const jobEvent = (eventId: string, job: FineTuningJob): JobWebhookEvent => ({
  object: 'event',
  id: eventId,
  type: `fine_tuning.job.${job.status as FinishedStatus}`,
  created_at: job.finished_at ?? Math.floor(Date.now() / 1000),
  data: { id: job.id },
});

export interface MailContent {
  subject: string;
  text: string;
}

const when = (seconds: number | null) =>
  seconds === null ? '-' : new Date(seconds * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');

function duration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

/** The e-mail a person gets when their job finishes: what happened, and what to do next. */
export function jobMail(job: FineTuningJob, orgName: string): MailContent {
  const status = job.status as FinishedStatus;
  const verb = status === 'cancelled' ? 'was cancelled' : status;
  const subject =
    status === 'succeeded' && job.fine_tuned_model
      ? `[tunelab] Fine-tuning job ${job.id} succeeded: ${job.fine_tuned_model}`
      : `[tunelab] Fine-tuning job ${job.id} ${verb}`;
  const rows: Array<[string, string]> = [
    ['Job', job.id],
    ['Status', status],
    ['Organization', orgName],
    ['Base model', job.model],
    ['Fine-tuned model', job.fine_tuned_model ?? '-'],
    ['Trained tokens', job.trained_tokens === null ? '-' : job.trained_tokens.toLocaleString('en-US')],
    ['Training file', job.training_file],
    ...(job.validation_file ? [['Validation file', job.validation_file] as [string, string]] : []),
    ...(job.user_provided_suffix ? [['Suffix', job.user_provided_suffix] as [string, string]] : []),
    ['Created', when(job.created_at)],
    [
      'Finished',
      job.finished_at === null ? '-' : `${when(job.finished_at)} (after ${duration(Math.max(0, job.finished_at - job.created_at))})`,
    ],
  ];
  if (status === 'failed' && job.error) {
    rows.push(['Error', `${job.error.message}${job.error.code ? ` (${job.error.code})` : ''}`]);
  }
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  const next =
    status === 'succeeded' && job.fine_tuned_model
      ? `Your model is ready: use "${job.fine_tuned_model}" as the model in chat completions.`
      : status === 'failed'
        ? "The job's events say more about what went wrong. No usage is recorded for a job that did not succeed."
        : 'The job was stopped before it finished: no fine-tuned model was made, and no usage is recorded.';
  const text = [
    `Your fine-tuning job ${job.id} ${verb}.`,
    '',
    ...rows.map(([label, value]) => `  ${`${label}:`.padEnd(width)}${value}`),
    '',
    next,
    '',
    `  tunelab jobs get ${job.id}`,
    `  tunelab jobs events ${job.id}`,
    '',
  ].join('\n');
  return { subject, text };
}
