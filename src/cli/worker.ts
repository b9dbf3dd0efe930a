import type { Command } from 'commander';
import { parseByteSize } from '../config.js';

export function workerCommand(program: Command): void {
  program
    .command('worker')
    .description("train jobs from a server's queue on this host (its database and storage shared)")
    .requiredOption('--database <url>', "the server's postgres:// URL", process.env.TUNELAB_DATABASE_URL)
    .requiredOption('--storage <dir>', "the server's home folder, mounted here at the same path (NFS and the like)", process.env.TUNELAB_HOME)
    .option('--slots <n>', 'jobs trained at once, one engine process each', (v) => Number.parseInt(v, 10), 1)
    .option('--memory <size>', 'the most memory one job may take here, e.g. 24GB (default: one GPU, or the RAM without one)', parseByteSize)
    .option('--lease <seconds>', 'how long a job is held without a heartbeat before another worker takes it', (v) => Number(v) * 1000)
    .action(async (options: { database: string; storage: string; slots: number; memory?: number; lease?: number }) => {
      // Loaded here: the other commands need none of the runner's modules.
      const { startWorker } = await import('../worker.js');
      const worker = await startWorker({
        database: options.database,
        storage: options.storage,
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
