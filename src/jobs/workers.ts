import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { databaseNow } from '../store/db-clock.js';
import type { Db } from '../store/store.js';
import type { Capabilities } from './capabilities.js';

/** A worker as `tunelab workers list` and `GET /v1/workers` show it, with the jobs it holds. */
export interface WorkerInfo {
  object: 'worker';
  id: string;
  host: string;
  pid: number;
  slots: number;
  capabilities: Capabilities;
  started_at: number;
  /** Ms since its last heartbeat, by the database's clock. */
  last_heartbeat_ms_ago: number;
  status: 'active' | 'silent' | 'stopped';
  jobs: Array<{ id: string; status: string; lease_expires_in_ms: number }>;
}

/**
 * How long a worker that stopped beating (it stopped, was killed, or its host went away) stays
 * listed: long enough to see what happened to it after a weekend, short enough that a cluster
 * whose `tunelab worker`s start afresh each deploy does not list every start it ever had.
 */
export const WORKER_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * The workers table: each process that trains jobs (the server's runner, `tunelab worker`) records
 * itself and what it can hold, and beats while it lives; the jobs it holds are those its leases name.
 */
export class WorkerRegistry {
  constructor(
    private readonly db: Db,
    /** A worker silent this long is shown as silent: its leases expire about then. */
    private readonly silentAfterMs: number,
  ) {}

  async register(worker: { id: string; slots: number; capabilities: Capabilities }): Promise<void> {
    const now = Date.now();
    const row = {
      id: worker.id,
      host: os.hostname(),
      pid: process.pid,
      capabilities: JSON.stringify(worker.capabilities),
      slots: worker.slots,
      started_at: Math.floor(now / 1000),
      heartbeat_at: now,
      stopped_at: null,
    };
    await this.db
      .insertInto('workers')
      .values(row)
      .onConflict((conflict) => conflict.column('id').doUpdateSet({ ...row, id: undefined }))
      .execute();
    await this.beat(worker.id);
    await this.prune();
  }

  /**
   * Removes the workers silent for longer than the retention that no job's lease names: each start
   * tidies up after the ones before it, so the table holds the live workers and the recent past.
   * A worker a lease still names stays, however old: the job it held is listed under it until
   * another worker takes the job over.
   */
  private async prune(): Promise<void> {
    await this.db
      .deleteFrom('workers')
      .where('heartbeat_at', '<', sql<number>`${databaseNow(this.db)} - ${WORKER_RETENTION_MS}`)
      .where('id', 'not in', this.db.selectFrom('jobs').select('lease_worker').where('lease_worker', 'is not', null))
      .execute();
  }

  async beat(id: string): Promise<void> {
    await this.db.updateTable('workers').set({ heartbeat_at: databaseNow(this.db) }).where('id', '=', id).execute();
  }

  async stopped(id: string): Promise<void> {
    await this.db.updateTable('workers').set({ stopped_at: Math.floor(Date.now() / 1000) }).where('id', '=', id).execute();
  }

  /** Every worker, newest first, with the jobs it holds a lease on. */
  async list(): Promise<WorkerInfo[]> {
    const now = databaseNow(this.db);
    const workers = await this.db
      .selectFrom('workers')
      .selectAll()
      .select(sql<number>`${now} - heartbeat_at`.as('silent_ms'))
      .orderBy('started_at', 'desc')
      .execute();
    const held = await this.db
      .selectFrom('jobs')
      .select(['id', 'status', 'lease_worker', sql<number>`lease_expires_at - ${now}`.as('expires_in')])
      .where('lease_worker', 'is not', null)
      .execute();
    return workers.map((worker) => ({
      object: 'worker',
      id: worker.id,
      host: worker.host,
      pid: worker.pid,
      slots: worker.slots,
      capabilities: JSON.parse(worker.capabilities) as Capabilities,
      started_at: worker.started_at,
      last_heartbeat_ms_ago: Number(worker.silent_ms),
      status: worker.stopped_at !== null ? 'stopped' : Number(worker.silent_ms) > this.silentAfterMs ? 'silent' : 'active',
      jobs: held
        .filter((job) => job.lease_worker === worker.id)
        .map((job) => ({ id: job.id, status: job.status, lease_expires_in_ms: Number(job.expires_in) })),
    }));
  }
}

/** A fresh worker id: a `tunelab worker` is a new worker each time it starts. */
export const newWorkerId = () => `worker-${os.hostname()}-${randomUUID().slice(0, 8)}`;

/**
 * The server's runner keeps one id across restarts (in its home folder), so a restarted server
 * finds the jobs it was training by their leases and continues them at once.
 */
export function serverWorkerId(home: string): string {
  const file = path.join(home, 'worker-id');
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    const id = `server-${os.hostname()}-${randomUUID().slice(0, 8)}`;
    fs.writeFileSync(file, `${id}\n`, { mode: 0o600 });
    return id;
  }
}
