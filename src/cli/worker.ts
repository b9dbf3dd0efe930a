import type { Command } from 'commander';
import { parseByteSize } from '../config.js';
import type { WorkerInfo } from '../jobs/workers.js';
import { connect } from './client.js';
import { printJson, printTable } from './output.js';

export function workerCommand(program: Command): void {
  program
    .command('worker')
    .description("train jobs from a server's queue on this host (its database and storage shared)")
    .requiredOption('--database <url>', "the server's postgres:// URL", process.env.TUNELAB_DATABASE_URL)
    .requiredOption('--storage <dir>', "the server's home folder, mounted here at the same path (NFS and the like)", process.env.TUNELAB_HOME)
    .option('--scratch <dir>', "this worker's folder for the runs it trains (default: <storage>/work/<worker id>; a local disk works too)")
    .option('--slots <n>', 'jobs trained at once, one engine process each', (v) => Number.parseInt(v, 10), 1)
    .option('--memory <size>', 'the most memory each process of a job (one per GPU) may take here, e.g. 24GB (default: one GPU, or the RAM without one)', parseByteSize)
    .option('--lease <seconds>', 'how long a job is held without a heartbeat before another worker takes it', (v) => Number(v) * 1000)
    .action(async (options: { database: string; storage: string; scratch?: string; slots: number; memory?: number; lease?: number }) => {
      // Loaded here: the other commands need none of the runner's modules.
      const { startWorker } = await import('../worker.js');
      const worker = await startWorker({
        database: options.database,
        storage: options.storage,
        scratch: options.scratch,
        slots: options.slots,
        memory: options.memory,
        leaseMs: options.lease,
      });
      console.error(`tunelab worker ${worker.id} taking jobs (${worker.capabilities.cpus} CPUs, ${worker.capabilities.gpus.length} GPUs)`);
      const stop = async () => {
        await worker.close();
        process.exit(0);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}

/** `tunelab workers list`: the workers, what they hold and the jobs they train, from `GET /v1/workers` (administrators). */
export function workersCommand(program: Command): void {
  program
    .command('workers')
    .description('the processes that train jobs (administrators)')
    .command('list')
    .description('workers, their memory and GPUs, heartbeats and the jobs they hold leases on')
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .option('--json', 'print the API objects as JSON')
    .action(async (options: { home?: string; json?: boolean }) => {
      const client = await connect(options.home);
      const list = await client.get<{ data: WorkerInfo[] }>('/workers');
      if (options.json) return printJson(list.data);
      printTable(
        list.data.map((worker) => ({
          id: worker.id,
          status: worker.status,
          host: worker.host,
          slots: worker.slots,
          memory: gigabytes(worker.capabilities.memory_bytes),
          gpus: worker.capabilities.gpus.map((gpu) => `${gpu.name} ${gigabytes(gpu.memory_bytes)}`).join(', ') || '-',
          heartbeat: `${(worker.last_heartbeat_ms_ago / 1000).toFixed(1)}s ago`,
          jobs: worker.jobs.map((job) => `${job.id} (${job.status}, lease ${(job.lease_expires_in_ms / 1000).toFixed(0)}s)`).join(', ') || '-',
        })),
        ['id', 'status', 'host', 'slots', 'memory', 'gpus', 'heartbeat', 'jobs'],
      );
    });
}

const gigabytes = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
