import { isFinished, type JobStatus } from '../../jobs/status.js';
import { listAll, type FineTuningJob } from '../api.js';
import { ErrorMessage, Loading, PageHeader, StatusBadge } from '../components/common.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { count, dateTime, duration, words } from '../format.js';
import { href, navigate } from '../router.js';

const STATUSES: JobStatus[] = ['validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'];

/** How long a job ran, or has been running. */
export const jobDuration = (job: FineTuningJob) => (job.finished_at ?? Date.now() / 1000) - job.created_at;

const COLUMNS: Array<Column<FineTuningJob>> = [
  { label: 'Job', title: true, cell: (job) => <a href={href('jobs', job.id)}>{job.id}</a> },
  { label: 'Status', cell: (job) => <StatusBadge status={job.status} /> },
  { label: 'Base model', cell: (job) => job.model },
  { label: 'Suffix', cell: (job) => job.user_provided_suffix ?? '—' },
  { label: 'Created', cell: (job) => dateTime(job.created_at) },
  { label: 'Duration', cell: (job) => duration(jobDuration(job)) },
  { label: 'Trained tokens', number: true, cell: (job) => count(job.trained_tokens) },
];

export function JobsPage({ status }: { status: string | null }) {
  const jobs = useLoad((signal) => listAll<FineTuningJob>('/fine_tuning/jobs', {}, signal), [], {
    everyMs: 3000,
    while: (list) => list.some((job) => !isFinished(job.status)),
  });
  const shown = jobs.data?.filter((job) => !status || job.status === status);

  return (
    <>
      <PageHeader title="Fine-tuning jobs">
        <label>
          Status{' '}
          <select value={status ?? ''} onChange={(e) => navigate(href('jobs', ...(e.currentTarget.value ? [{ status: e.currentTarget.value }] : [])))}>
            <option value="">all</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {words(s)}
              </option>
            ))}
          </select>
        </label>
      </PageHeader>
      <ErrorMessage error={jobs.error} />
      {!shown ? (
        !jobs.error && <Loading what="jobs" />
      ) : shown.length === 0 ? (
        <p class="muted">
          {status ? `No ${words(status)} jobs.` : 'No jobs yet: upload a file on the Files page, then start a job with the SDK or the CLI.'}
        </p>
      ) : (
        <ListTable label="Jobs" rows={shown} rowKey={(job) => job.id} columns={COLUMNS} />
      )}
    </>
  );
}
