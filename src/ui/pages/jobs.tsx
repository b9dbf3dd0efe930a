import { isFinished, type JobStatus } from '../../jobs/status.js';
import { listAll, type FineTuningJob } from '../api.js';
import { ErrorMessage, Loading, PageHeader, StatusBadge } from '../components/common.js';
import { useLoad } from '../components/use-load.js';
import { count, dateTime, duration, words } from '../format.js';
import { href, navigate } from '../router.js';

const STATUSES: JobStatus[] = ['validating_files', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'];

/** How long a job ran, or has been running. */
export const jobDuration = (job: FineTuningJob) => (job.finished_at ?? Date.now() / 1000) - job.created_at;

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
        <div class="table-scroll">
          <table class="list cards" aria-label="Jobs">
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Base model</th>
                <th scope="col">Suffix</th>
                <th scope="col">Created</th>
                <th scope="col">Duration</th>
                <th scope="col" class="number">Trained tokens</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((job) => (
                <tr key={job.id}>
                  <td class="card-title">
                    <a href={href('jobs', job.id)}>{job.id}</a>
                  </td>
                  <td data-label="Status">
                    <StatusBadge status={job.status} />
                  </td>
                  <td data-label="Base model">{job.model}</td>
                  <td data-label="Suffix">{job.user_provided_suffix ?? '—'}</td>
                  <td data-label="Created">{dateTime(job.created_at)}</td>
                  <td data-label="Duration">{duration(jobDuration(job))}</td>
                  <td class="number" data-label="Trained tokens">
                    {count(job.trained_tokens)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
