import { get, type List, type WorkerInfo } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
import { type Column, ListTable } from '../components/list-table.js';
import { useLoad } from '../components/use-load.js';
import { bytes, count, dateTime } from '../format.js';
import { href } from '../router.js';

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

const COLUMNS: Array<Column<WorkerInfo>> = [
  {
    label: 'Worker',
    rowHeader: true,
    title: true,
    cell: (worker) => (
      <>
        {worker.id}
        <div class="muted">since {dateTime(worker.started_at)}</div>
      </>
    ),
  },
  { label: 'Status', cell: (worker) => worker.status },
  { label: 'Host', cell: (worker) => `${worker.host} (pid ${worker.pid})` },
  { label: 'Slots', number: true, cell: (worker) => count(worker.slots) },
  { label: 'Memory', cell: (worker) => `${bytes(worker.capabilities.memory_bytes)}, ${worker.capabilities.cpus} CPUs` },
  { label: 'GPUs', cell: (worker) => worker.capabilities.gpus.map((gpu) => `${gpu.name} (${bytes(gpu.memory_bytes)})`).join(', ') || 'none' },
  { label: 'Heartbeat', cell: (worker) => `${seconds(worker.last_heartbeat_ms_ago)} ago` },
  {
    label: 'Jobs',
    cell: (worker) =>
      worker.jobs.length === 0
        ? '—'
        : worker.jobs.map((job) => (
            <div key={job.id}>
              <a href={href('jobs', job.id)}>{job.id}</a> {job.status}, lease {job.lease_expires_in_ms > 0 ? `for ${seconds(job.lease_expires_in_ms)}` : 'expired'}
            </div>
          )),
  },
];

/** The processes that train jobs, what they can hold and the jobs they hold leases on (administrators). */
export function WorkersPage() {
  const workers = useLoad((signal) => get<List<WorkerInfo>>('/workers', undefined, signal), [], { everyMs: 2000, while: () => true });
  const list = workers.data?.data;

  return (
    <>
      <PageHeader title="Workers" />
      <p class="muted">
        The server's own engine slots and each <code>tunelab worker</code>. A worker holds each job it trains under a lease it renews; one that
        stops renewing loses its jobs to another worker.
      </p>
      <ErrorMessage error={workers.error} />
      {!list ? (
        !workers.error && <Loading what="workers" />
      ) : list.length === 0 ? (
        <p class="muted">No worker has started: the server trains nothing (--slots 0) and no tunelab worker has joined.</p>
      ) : (
        <ListTable label="Workers" rows={list} rowKey={(worker) => worker.id} columns={COLUMNS} />
      )}
    </>
  );
}

/** What a key of an organization that does not administer the server sees at #/workers, which its navigation does not offer. */
export function WorkersForAdministratorsOnly({ organization }: { organization: string }) {
  return (
    <>
      <PageHeader title="Workers" />
      <ErrorMessage
        error={`Only administrators see the workers: they train every organization's jobs. This key's organization, "${organization}", is not one of those the server's config.json lists (models.pull_organizations).`}
      />
    </>
  );
}
