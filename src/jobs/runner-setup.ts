import type { HomeLayout } from '../config.js';
import type { Db } from '../store/store.js';
import { type Capabilities, detectCapabilities, memoryForOneJob, processesPerJob } from './capabilities.js';
import { JobLeases, QUEUE_POLL_MS } from './leases.js';
import { JobRunner, type RunnerServices } from './runner.js';
import type { WorkerRegistry } from './workers.js';

/** Who trains, where and how much: what tells the server's own runner from a `tunelab worker`'s. */
export interface RunnerSetup {
  db: Db;
  services: RunnerServices;
  home: HomeLayout;
  workerId: string;
  workers: WorkerRegistry;
  /** Engine processes at once; 0 trains nothing. */
  slots: number;
  /** The runner's own folder for its runs (src/jobs/runner.ts RunnerOptions). */
  scratch: string;
  leaseMs: number;
  pollMs?: number | undefined;
  /** The most memory one process of a job may take here, below what the host has (a shared host). */
  memoryCap?: number | undefined;
  log: (message: string, error?: unknown) => void;
}

/**
 * The runner of the server (`tunelab serve`) or of a worker (`tunelab worker`), on this host's
 * capabilities, told of every job this process moves.
 */
export function setUpRunner(setup: RunnerSetup): { runner: JobRunner; capabilities: Capabilities } {
  const capabilities = detectCapabilities();
  const { services, slots } = setup;
  const runner = new JobRunner(services, setup.home, {
    slots,
    scratch: setup.scratch,
    worker: {
      id: setup.workerId,
      capabilities,
      memory: Math.min(setup.memoryCap ?? Infinity, memoryForOneJob(capabilities)),
      processes: processesPerJob(capabilities, slots),
    },
    leases: new JobLeases(setup.db, setup.leaseMs),
    workers: setup.workers,
    pollMs: setup.pollMs ?? QUEUE_POLL_MS,
    log: setup.log,
  });
  services.jobs.onChange((job) => runner.jobChanged(job));
  return { runner, capabilities };
}
