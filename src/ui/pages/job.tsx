import type { ComponentChildren } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { StepMetrics } from '../../jobs/jobs.js';
import { USER_ACTIONS, isFinished, type JobStatus, type UserAction } from '../../jobs/status.js';
import {
  downloadFile,
  get,
  listAll,
  post,
  type FileObject,
  type FineTuningJob,
  type FineTuningJobCheckpoint,
  type FineTuningJobEvent,
  type List,
} from '../api.js';
import { ExportMenu } from '../components/export-menu.js';
import { ErrorMessage, Facts, Loading, PageHeader, StatusBadge } from '../components/common.js';
import { LineChart } from '../components/line-chart.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { bytes, count, dateTime, duration, number, words } from '../format.js';
import { href } from '../router.js';
import { jobDuration } from './jobs.js';
import './job.css';

/** Everything the page shows, fetched together so one poll gives a consistent picture. */
interface JobView {
  job: FineTuningJob;
  /** Newest first, as the API lists them. */
  events: FineTuningJobEvent[];
  /** Oldest step first. */
  metrics: StepMetrics[];
  checkpoints: FineTuningJobCheckpoint[];
}

const POLL_MS = 2000;

export function JobPage({ id }: { id: string }) {
  // What the last poll had: the next asks only for newer events and steps.
  const previous = useRef<JobView | undefined>(undefined);
  const view = useLoad(
    async (signal) => {
      const known = previous.current?.job.id === id ? previous.current : undefined;
      previous.current = await loadView(id, known, signal);
      return previous.current;
    },
    [id],
    { everyMs: POLL_MS, while: ({ job }) => !isFinished(job.status) },
  );
  if (!view.data) {
    return (
      <>
        <p>
          <a href={href('jobs')}>← Jobs</a>
        </p>
        <ErrorMessage error={view.error} />
        {!view.error && <Loading what="the job" />}
      </>
    );
  }
  const { job, events, metrics, checkpoints } = view.data;
  return (
    <div class="job-page">
      <p class="back">
        <a href={href('jobs')}>← Jobs</a>
      </p>
      <PageHeader
        title={
          <>
            {job.id} <StatusBadge status={job.status} />
          </>
        }
      >
        <JobActions job={job} onDone={view.reload} />
      </PageHeader>
      <ErrorMessage error={view.error} />
      {job.status === 'failed' && job.error && <ErrorMessage error={job.error.message} />}
      <Timeline job={job} events={events} />
      <section class="panel" aria-labelledby="job-facts">
        <h2 id="job-facts">Details</h2>
        <Facts facts={details(job, metrics)} />
        <div class="names">
          <Facts facts={names(job)} />
        </div>
      </section>
      <section class="panel" aria-labelledby="job-hyperparameters">
        <h2 id="job-hyperparameters">Hyperparameters</h2>
        <Hyperparameters job={job} />
      </section>
      <section class="panel" aria-labelledby="job-curve">
        <h2 id="job-curve">Training curve</h2>
        <Curve job={job} metrics={metrics} />
      </section>
      <section class="panel" aria-labelledby="job-checkpoints">
        <h2 id="job-checkpoints">Checkpoints</h2>
        <Checkpoints job={job} checkpoints={checkpoints} />
      </section>
      {job.result_files.length > 0 && (
        <section class="panel" aria-labelledby="job-results">
          <h2 id="job-results">Result file</h2>
          <ResultFiles ids={job.result_files} />
        </section>
      )}
      <section class="panel" aria-labelledby="job-events">
        <h2 id="job-events">Events</h2>
        <EventsLog events={events} />
      </section>
    </div>
  );
}

async function loadView(id: string, known: JobView | undefined, signal: AbortSignal): Promise<JobView> {
  const path = `/fine_tuning/jobs/${encodeURIComponent(id)}`;
  // The job first: once it reads finished, the steps and events fetched after it are all there are.
  const job = await get<FineTuningJob>(path, undefined, signal);
  const [events, metrics, checkpoints] = await Promise.all([
    newerEvents(`${path}/events`, known?.events ?? [], signal),
    newerMetrics(`${path}/metrics`, known?.metrics ?? [], signal),
    listAll<FineTuningJobCheckpoint>(`${path}/checkpoints`, {}, signal),
  ]);
  return { job, events, metrics, checkpoints };
}

/**
 * The job's message events; its step events are the curve's (a long job has hundreds of thousands).
 * The events list pages from the newest, with no way to ask for those after a given one: pages are
 * read until one reaches an event already held.
 */
async function newerEvents(path: string, known: FineTuningJobEvent[], signal: AbortSignal): Promise<FineTuningJobEvent[]> {
  const held = new Set(known.map((event) => event.id));
  const fresh = await listAll<FineTuningJobEvent>(path, { type: 'message' }, signal, (page) => page.some((event) => held.has(event.id)));
  const read = new Set(fresh.map((event) => event.id));
  return [...fresh, ...known.filter((event) => !read.has(event.id))];
}

/** From the last step held, not after it: that step may have gained its evaluation since. */
async function newerMetrics(path: string, known: StepMetrics[], signal: AbortSignal): Promise<StepMetrics[]> {
  const last = known.at(-1)?.step;
  // A long job's curve comes thinned to about what the chart can show; the steps after it come whole.
  const { data } = await get<List<StepMetrics>>(path, last === undefined ? { max_points: CURVE_POINTS } : { from_step: last }, signal);
  return last === undefined ? data : [...known.filter((m) => m.step < last), ...data];
}

/** Points of a long job's curve on first load: about the chart's width in pixels, twice over. */
const CURVE_POINTS = 4000;

const ACTION_LABELS: Record<UserAction, string> = { pause: 'Pause', resume: 'Resume', cancel: 'Cancel job' };

function JobActions({ job, onDone }: { job: FineTuningJob; onDone: () => void }) {
  // Until the page has the job's new status, the old status's buttons stay disabled: a second click would be refused.
  const [actedFrom, setActedFrom] = useState<JobStatus | null>(null);
  const busy = actedFrom === job.status;
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<Error>();
  const answer = useRef<HTMLButtonElement>(null);
  // Focus moves to the question's answer, so a keyboard user is not left on a button that went away.
  useEffect(() => {
    if (confirming) answer.current?.focus();
  }, [confirming]);
  const legal = (Object.keys(USER_ACTIONS) as UserAction[]).filter((action) =>
    (USER_ACTIONS[action].from as readonly JobStatus[]).includes(job.status),
  );
  const act = async (action: UserAction) => {
    setActedFrom(job.status);
    setError(undefined);
    try {
      await post(`/fine_tuning/jobs/${encodeURIComponent(job.id)}/${action}`);
    } catch (failure) {
      setError(failure as Error);
      setActedFrom(null);
    } finally {
      setConfirming(false);
      onDone();
    }
  };
  if (legal.length === 0 && !error) return null;

  return (
    <div class="job-actions">
      {confirming ? (
        <div class="confirm" role="group" aria-label="Confirm cancelling">
          <span>Cancel this job? It cannot be resumed.</span>
          <button class="danger" disabled={busy} onClick={() => act('cancel')} ref={answer}>
            Yes, cancel it
          </button>
          <button class="secondary" disabled={busy} onClick={() => setConfirming(false)}>
            Keep it
          </button>
        </div>
      ) : (
        legal.map((action) => (
          <button
            key={action}
            class={action === 'cancel' ? 'danger' : 'secondary'}
            disabled={busy}
            onClick={() => (action === 'cancel' ? setConfirming(true) : act(action))}
          >
            {ACTION_LABELS[action]}
          </button>
        ))
      )}
      <ErrorMessage error={error} />
    </div>
  );
}

/** A moment in the job's life: its creation, then each status it entered. */
interface Milestone {
  status: JobStatus | 'created';
  at: number;
  /** Why, when the job enters a status again (a restart, a resumption from a checkpoint) or fails. */
  detail?: string;
}

/** The job's status events carry the status they moved it to (`data.status`), oldest first here. */
function milestones(job: FineTuningJob, events: FineTuningJobEvent[]): Milestone[] {
  const reached = new Set<string>();
  const moves = [...events].reverse().flatMap((event): Milestone[] => {
    const status = (event.data as { status?: JobStatus } | undefined)?.status;
    if (!status) return [];
    const again = reached.has(status);
    reached.add(status);
    return [{ status, at: event.created_at, detail: again || status === 'failed' ? event.message : undefined }];
  });
  return [{ status: 'created', at: job.created_at }, ...moves];
}

function Timeline({ job, events }: { job: FineTuningJob; events: FineTuningJobEvent[] }) {
  const steps = milestones(job, events);
  return (
    <section aria-labelledby="job-timeline">
      <h2 id="job-timeline" class="visually-hidden">
        Timeline
      </h2>
      <ol class="timeline">
        {steps.map((step, index) => (
          <li key={index} class={`tone-${step.status}`}>
            <span class="timeline-label">{words(step.status)}</span>
            <time dateTime={new Date(step.at * 1000).toISOString()}>{clock(step.at)}</time>
            {/* A failure's reason is told above the timeline already. */}
            {step.detail && step.status !== 'failed' && <span class="timeline-detail">{step.detail}</span>}
          </li>
        ))}
        {job.status === 'running' && job.estimated_finish && (
          <li class="timeline-expected">
            <span class="timeline-label">expected to finish</span>
            <time dateTime={new Date(job.estimated_finish * 1000).toISOString()}>{clock(job.estimated_finish)}</time>
          </li>
        )}
      </ol>
    </section>
  );
}

/** Seconds matter on a timeline where a small job goes from created to succeeded within a minute. */
const clock = (unixSeconds: number) => new Date(unixSeconds * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

const fileLink = (id: string | null) => (id ? <a href={href('files', id)}>{id}</a> : '—');

const playgroundLink = (job: FineTuningJob, model: string) => (
  <a href={href('playground', { left: job.model, right: model })}>Open in playground</a>
);

function details(job: FineTuningJob, metrics: StepMetrics[]): Array<[string, ComponentChildren]> {
  const last = metrics.at(-1);
  return [
    [job.model.startsWith('ft:') ? 'Trained from' : 'Base model', job.model],
    ['Method', job.method?.type === 'dpo' ? 'DPO (preference pairs)' : 'Supervised'],
    ['Suffix', job.user_provided_suffix ?? '—'],
    ['Progress', last ? `step ${count(last.step)} of ${count(last.total_steps)}` : '—'],
    ['Trained tokens', count(job.trained_tokens)],
    ['Seed', String(job.seed)],
    ['Created', dateTime(job.created_at)],
    job.finished_at ? ['Finished', dateTime(job.finished_at)] : ['Estimated finish', dateTime(job.estimated_finish)],
    ['Duration', duration(jobDuration(job))],
  ];
}

/** Long identifiers, given wider columns than the short facts. */
function names(job: FineTuningJob): Array<[string, ComponentChildren]> {
  return [
    [
      'Fine-tuned model',
      job.fine_tuned_model ? (
        <>
          <span class="mono">{job.fine_tuned_model}</span> · {playgroundLink(job, job.fine_tuned_model)}
        </>
      ) : (
        '—'
      ),
    ],
    ...(job.fine_tuned_model ? [['Export', <ExportMenu model={job.fine_tuned_model} />] as [string, ComponentChildren]] : []),
    ['Training file', fileLink(job.training_file)],
    ['Validation file', fileLink(job.validation_file)],
  ];
}

const HYPERPARAMETER_NAMES: Record<string, string> = {
  n_epochs: 'Epochs',
  batch_size: 'Batch size',
  learning_rate_multiplier: 'Learning rate multiplier',
  full: 'Method',
  lora_rank: 'LoRA rank',
  lora_alpha: 'LoRA alpha',
  beta: 'Beta (DPO)',
};

function Hyperparameters({ job }: { job: FineTuningJob }) {
  const given = (job.method?.dpo?.hyperparameters ?? job.method?.supervised?.hyperparameters ?? job.hyperparameters) as Record<string, unknown>;
  const values = Object.entries(given).map(([name, value]): [string, string] => [
    HYPERPARAMETER_NAMES[name] ?? name,
    name === 'full' ? (value ? 'full fine-tune' : 'LoRA adapter') : String(value),
  ]);
  // The runner writes the resolved values when the job starts; until then they are as asked.
  const unresolved = Object.values(given).includes('auto');
  return (
    <>
      {unresolved && <p class="muted">As requested: "auto" is resolved when the job starts.</p>}
      <Facts facts={values} />
    </>
  );
}

function Curve({ job, metrics }: { job: FineTuningJob; metrics: StepMetrics[] }) {
  const dpo = job.method?.type === 'dpo';
  const chart = useMemo(() => {
    const validated = job.validation_file !== null;
    return {
      x: metrics.map((m) => m.step),
      series: [
        { label: 'Training loss', values: metrics.map((m) => m.train_loss ?? null), color: 'var(--series-1)' },
        ...(validated ? [{ label: 'Validation loss', values: metrics.map((m) => m.valid_loss ?? null), color: 'var(--series-2)', sparse: true }] : []),
        // DPO: how far the chosen answers' reward is ahead of the rejected ones', and for how many pairs.
        ...(dpo
          ? [
              { label: 'Reward margin', values: metrics.map((m) => m.train_reward_margin ?? null), color: 'var(--series-4)' },
              { label: 'Reward accuracy', values: metrics.map((m) => m.train_reward_accuracy ?? null), color: 'var(--series-3)', right: true, digits: 3 },
            ]
          : [{ label: 'Token accuracy', values: metrics.map((m) => m.train_mean_token_accuracy ?? null), color: 'var(--series-3)', right: true, digits: 3 }]),
      ],
    };
  }, [metrics, job.validation_file, dpo]);

  if (metrics.length === 0) {
    return <p class="muted">{isFinished(job.status) ? 'This job trained no steps.' : 'No steps yet: the curve starts when the job runs.'}</p>;
  }
  return (
    <LineChart
      title={dpo ? 'Loss, reward margin and reward accuracy per step' : 'Loss and token accuracy per step'}
      x={chart.x}
      xLabel="Step"
      xMax={metrics.at(-1)!.total_steps}
      leftLabel={dpo ? 'Loss, margin' : 'Loss'}
      rightLabel={dpo ? 'Reward accuracy' : 'Token accuracy'}
      rightRange={[0, 1]}
      series={chart.series}
    />
  );
}

const metrics = (checkpoint: FineTuningJobCheckpoint) => checkpoint.metrics as Record<string, number | undefined>;

const checkpointColumns = (job: FineTuningJob): Array<Column<FineTuningJobCheckpoint>> => [
  { label: 'Step', number: true, cell: (checkpoint) => checkpoint.step_number },
  { label: 'Model', class: 'mono', title: true, cell: (checkpoint) => checkpoint.fine_tuned_model_checkpoint },
  { label: 'Training loss', number: true, cell: (checkpoint) => number(metrics(checkpoint).train_loss) },
  { label: 'Validation loss', number: true, cell: (checkpoint) => number(metrics(checkpoint).full_valid_loss ?? metrics(checkpoint).valid_loss) },
  { label: 'Token accuracy', number: true, cell: (checkpoint) => number(metrics(checkpoint).train_mean_token_accuracy, 3) },
  { label: 'Playground', title: true, cell: (checkpoint) => playgroundLink(job, checkpoint.fine_tuned_model_checkpoint) },
];

function Checkpoints({ job, checkpoints }: { job: FineTuningJob; checkpoints: FineTuningJobCheckpoint[] }) {
  if (checkpoints.length === 0) {
    return <p class="muted">{isFinished(job.status) ? 'No checkpoints.' : 'None yet: one is saved at the end of each epoch.'}</p>;
  }
  const byStep = [...checkpoints].sort((a, b) => a.step_number - b.step_number);
  return (
    <ListTable label="Checkpoints" class="checkpoints" rows={byStep} rowKey={(checkpoint) => checkpoint.id} columns={checkpointColumns(job)} />
  );
}

function ResultFiles({ ids }: { ids: string[] }) {
  const files = useLoad((signal) => Promise.all(ids.map((id) => get<FileObject>(`/files/${encodeURIComponent(id)}`, undefined, signal))), [ids.join()]);
  const [error, setError] = useState<Error>();
  if (!files.data) return files.error ? <ErrorMessage error={files.error} /> : <Loading what="the result file" />;
  return (
    <>
      <ul class="result-files">
        {files.data.map((file) => (
          <li key={file.id}>
            <span class="mono">{file.filename}</span> <span class="muted">({bytes(file.bytes)})</span>{' '}
            <button class="secondary" aria-label={`Download ${file.filename}`} onClick={() => downloadFile(file).then(() => setError(undefined), setError)}>
              Download
            </button>
          </li>
        ))}
      </ul>
      <ErrorMessage error={error} />
    </>
  );
}

/** The job's messages; each step's event says what the curve and its table above show. */
function EventsLog({ events }: { events: FineTuningJobEvent[] }) {
  return (
    <>
      {/* Focusable, so a keyboard can scroll a long log. */}
      <ol class="events" tabIndex={0} aria-label="Events, newest first">
        {events.map((event) => (
          <li key={event.id} class={`level-${event.level}`}>
            <time dateTime={new Date(event.created_at * 1000).toISOString()}>{clock(event.created_at)}</time>
            <span class={`level level-${event.level}`}>{event.level}</span>
            <span class="message">{event.message}</span>
          </li>
        ))}
      </ol>
    </>
  );
}
