import fsp from 'node:fs/promises';
import path from 'node:path';
import { homeLayout } from './config.js';
import { useEnginePython } from './engine/python.js';
import { locateEnginePython } from './engine/setup.js';
import { LocalBlobStore } from './files/blob-store.js';
import { DiskSpace } from './files/disk.js';
import { FileService } from './files/files.js';
import { LocalFolderStore } from './files/folder-store.js';
import type { Capabilities } from './jobs/capabilities.js';
import { JobService } from './jobs/jobs.js';
import { DEFAULT_LEASE_MS } from './jobs/leases.js';
import { setUpRunner } from './jobs/runner-setup.js';
import { StoredFolders } from './jobs/stored-folders.js';
import { WorkerRegistry, newWorkerId } from './jobs/workers.js';
import { BaseModelRegistry } from './models/base-models.js';
import { ModelService } from './models/models.js';
import { OrgService } from './orgs/orgs.js';
import { openStore } from './store/store.js';

export interface WorkerOptions {
  /** The server's database: a `postgres://` URL (a SQLite file serves a worker on the server's own host). */
  database: string;
  /**
   * The storage every host mounts (NFS and the like) at the same path: the server's home folder, with
   * its uploads, base models, and the folder store of training arrays, checkpoints and fine-tunes.
   */
  storage: string;
  /**
   * This worker's own folder for the runs it trains (the engine's spec, log and what it is writing).
   * By default `<storage>/work/<worker id>`, where a checkpoint enters the store by a rename, removed
   * when the worker stops; a local disk saves the network writes of checkpoints nobody keeps.
   */
  scratch?: string;
  /** Jobs trained at once, one engine process each. */
  slots?: number;
  /** The most memory one job may take here, in bytes, below what the host has (a shared host). */
  memory?: number;
  leaseMs?: number;
  pollMs?: number;
  log?: (message: string, error?: unknown) => void;
}

export interface RunningWorker {
  id: string;
  capabilities: Capabilities;
  /** Stops taking jobs; engines save a checkpoint and exit, their jobs continue on another worker once their leases expire. */
  close(): Promise<void>;
}

/**
 * `tunelab worker`: trains jobs from the server's queue on this host, through the same services
 * the server uses, under a lease per job (src/jobs/leases.ts). It serves no API.
 */
export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const home = homeLayout(options.storage);
  const python = locateEnginePython(home.root);
  if (python) useEnginePython(python);
  const log = options.log ?? ((message: string, error?: unknown) => console.error(`${new Date().toISOString()} ${message}${error ? `: ${String(error)}` : ''}`));
  const store = await openStore(options.database);
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  const baseModels = new BaseModelRegistry(home.models);
  const files = new FileService(store.db, new LocalBlobStore(home.blobs));
  const id = newWorkerId();
  const scratch = path.resolve(options.scratch ?? path.join(home.work, id));
  const folders = new LocalFolderStore(home.store);
  const stored = new StoredFolders(store.db);
  const models = new ModelService(store.db, baseModels, { folders, fetched: path.join(scratch, 'models') });
  const jobs = new JobService(store.db, files, baseModels, models);
  const disk = new DiskSpace(home.root, home.diskReserve);
  const { runner, capabilities } = setUpRunner({
    db: store.db,
    services: { jobs, models, files, orgs: new OrgService(store.db), disk, folders, stored },
    home,
    workerId: id,
    workers: new WorkerRegistry(store.db, leaseMs),
    slots: options.slots ?? 1,
    scratch,
    leaseMs,
    pollMs: options.pollMs,
    memoryCap: options.memory,
    log,
  });
  try {
    await disk.setAside();
    await runner.start();
  } catch (error) {
    await store.close();
    throw error;
  }
  return {
    id,
    capabilities,
    close: async () => {
      await runner.stop();
      await store.close();
      // Its jobs continue elsewhere from what is in the store; nothing here is named by any record.
      // A folder the operator named is left as it is: it may hold more than this worker's runs.
      if (!options.scratch) await fsp.rm(scratch, { recursive: true, force: true });
    },
  };
}
