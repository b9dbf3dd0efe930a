import { get, type List, type WorkerInfo } from '../api.js';
import { ErrorMessage, Loading, PageHeader } from '../components/common.js';
import { useLoad } from '../components/use-load.js';
import { bytes, count, dateTime } from '../format.js';
import { href } from '../router.js';

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

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
        <div class="table-scroll">
          <table class="list cards" aria-label="Workers">
            <thead>
              <tr>
                <th scope="col">Worker</th>
                <th scope="col">Status</th>
                <th scope="col">Host</th>
                <th scope="col" class="number">Slots</th>
                <th scope="col">Memory</th>
                <th scope="col">GPUs</th>
                <th scope="col">Heartbeat</th>
                <th scope="col">Jobs</th>
              </tr>
            </thead>
            <tbody>
              {list.map((worker) => (
                <tr key={worker.id}>
                  <th scope="row" class="card-title">
                    {worker.id}
                    <div class="muted">since {dateTime(worker.started_at)}</div>
                  </th>
                  <td data-label="Status">{worker.status}</td>
                  <td data-label="Host">
                    {worker.host} (pid {worker.pid})
                  </td>
                  <td class="number" data-label="Slots">
                    {count(worker.slots)}
                  </td>
                  <td data-label="Memory">
                    {bytes(worker.capabilities.memory_bytes)}, {worker.capabilities.cpus} CPUs
                  </td>
                  <td data-label="GPUs">{worker.capabilities.gpus.map((gpu) => `${gpu.name} (${bytes(gpu.memory_bytes)})`).join(', ') || 'none'}</td>
                  <td data-label="Heartbeat">{seconds(worker.last_heartbeat_ms_ago)} ago</td>
                  <td data-label="Jobs">
                    {worker.jobs.length === 0
                      ? '—'
                      : worker.jobs.map((job) => (
                          <div key={job.id}>
                            <a href={href('jobs', job.id)}>{job.id}</a> {job.status}, lease {job.lease_expires_in_ms > 0 ? `for ${seconds(job.lease_expires_in_ms)}` : 'expired'}
                          </div>
                        ))}
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
