import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Db } from '../store/store.js';
import { databaseNow, isPostgres } from '../store/db-clock.js';
import type { JobStatus } from './status.js';

/** A worker's hold on a job: its writes for the job name the token, and are refused once another worker holds it. */
export interface Lease {
  jobId: string;
  workerId: string;
  token: string;
}

/** What a worker has room for: bytes per process of a job, and processes per job (src/jobs/claiming.ts WorkerIdentity). */
export interface Room {
  memory: number;
  processes: number;
}

/** A lease lasts this long without a heartbeat: a lost worker's jobs wait about this long for another. */
export const DEFAULT_LEASE_MS = 30_000;
/** How often a runner looks at the queue (a read; it claims only what the look found), besides when its own process queues a job. */
export const QUEUE_POLL_MS = 1000;

/** What a lease's holder writes through. */
export interface Fence {
  lease: Lease;
  /** Runs `work` in a transaction of its own, refused with LeaseLost once the lease is lost. */
  write<T>(work: (trx: Db) => Promise<T>): Promise<T>;
  /** Inside a transaction another service opened (a job's move): refuses it once the lease is lost. */
  check(trx: Db): Promise<void>;
}

/** The lease was taken by another worker (this one stalled past its expiry): nothing more may be written for the job. */
export class LeaseLost extends Error {
  constructor(readonly lease: Lease) {
    super(`the lease on ${lease.jobId} was lost: another worker holds the job now`);
  }
}

/**
 * Leases on jobs in the jobs table, on PostgreSQL's row locks (`FOR UPDATE SKIP LOCKED`) rather
 * than a queue library: a job's lease must change in the same transaction as its status and its
 * fenced writes, which a queue kept in tables of its own (pg-boss, graphile-worker) cannot offer
 * without keeping two records of each job in step. Expiry is judged by the database's clock.
 */
export class JobLeases {
  constructor(
    private readonly db: Db,
    /** How long a lease lasts without a heartbeat. */
    readonly ttlMs: number,
  ) {}

  /** Leases the oldest queued job that nobody holds and that fits the worker (see `free`). */
  async claimQueued(workerId: string, room: Room): Promise<Lease | null> {
    return this.claim(workerId, 'queued', room);
  }

  /** Leases a running job whose worker stopped renewing its lease (killed, cut off or stalled). */
  async takeOverExpired(workerId: string, room: Room): Promise<Lease | null> {
    return this.claim(workerId, 'running', room);
  }

  /**
   * What a claim would find, by one read: a runner looks at the queue every second, and an idle
   * one then writes nothing (a claim is an UPDATE even when it leases no job).
   */
  async waiting(room: Room): Promise<{ queued: boolean; lost: boolean }> {
    const row = await this.db
      .selectNoFrom((eb) => [eb.exists(this.free('queued', room)).as('queued'), eb.exists(this.free('running', room)).as('lost')])
      .executeTakeFirstOrThrow();
    // SQLite answers 0 or 1, PostgreSQL a boolean.
    return { queued: Boolean(row.queued), lost: Boolean(row.lost) };
  }

  private async claim(workerId: string, status: 'queued' | 'running', room: Room): Promise<Lease | null> {
    let free = this.free(status, room).orderBy('seq', 'asc').limit(1);
    if (isPostgres(this.db)) free = free.forUpdate().skipLocked();
    const token = randomUUID();
    const row = await this.db
      .updateTable('jobs')
      .set({ lease_worker: workerId, lease_token: token, lease_expires_at: this.expiry() })
      .where('id', 'in', free)
      .returning('id')
      .executeTakeFirst();
    return row ? { jobId: row.id, workerId, token } : null;
  }

  /**
   * Jobs in `status` that nobody holds and that fit the worker: each of its processes for a job can
   * hold its share, what splits across them (memory_sharded) divided by their number, and all the
   * rest of memory_needed. In integers: needed * N - sharded * (N - 1) <= memory * N.
   */
  private free(status: 'queued' | 'running', { memory, processes }: Room) {
    const now = databaseNow(this.db);
    return this.db
      .selectFrom('jobs')
      .select('id')
      .where('status', '=', status)
      .where((eb) => eb.or([eb('lease_expires_at', 'is', null), eb('lease_expires_at', '<', now)]))
      .where((eb) =>
        eb.or([
          eb('memory_needed', 'is', null),
          eb(sql<number>`memory_needed * ${processes} - coalesce(memory_sharded, 0) * ${processes - 1}`, '<=', Math.floor(memory) * processes),
        ]),
      );
  }

  /**
   * Extends the lease; returns the job's status (a cancel or pause made anywhere shows here), or
   * null when the lease is lost: it expired, and may belong to another worker now.
   */
  async renew(lease: Lease): Promise<JobStatus | null> {
    const row = await this.held(this.db, lease)
      .set({ lease_expires_at: this.expiry() })
      .returning('status')
      .executeTakeFirst();
    return row ? (row.status as JobStatus) : null;
  }

  /** Gives the job up (its run ended); a lost lease has nothing to give up. */
  async release(lease: Lease): Promise<void> {
    await this.db
      .updateTable('jobs')
      .set({ lease_worker: null, lease_token: null, lease_expires_at: null })
      .where('id', '=', lease.jobId)
      .where('lease_token', '=', lease.token)
      .execute();
  }

  /**
   * The writes of a lease's holder. Each runs in a transaction that first proves the lease is still
   * held, and holds the job's row until the commit: a worker taking the job over waits for the
   * write, or the write sees the new token and is refused with LeaseLost.
   */
  fence(lease: Lease): Fence {
    const check = async (trx: Db) => {
      const held = await this.held(trx, lease).set({ lease_token: lease.token }).returning('id').executeTakeFirst();
      if (!held) throw new LeaseLost(lease);
    };
    return {
      lease,
      check,
      write: (work) =>
        this.db.transaction().execute(async (trx) => {
          await check(trx);
          return work(trx);
        }),
    };
  }

  /**
   * Leases a running job that this worker held before it restarted, or that no lease holds (it was
   * started before leases were kept), so it can be put back in the queue without waiting for expiry.
   */
  async adopt(jobId: string, workerId: string): Promise<Lease | null> {
    const token = randomUUID();
    const row = await this.db
      .updateTable('jobs')
      .set({ lease_worker: workerId, lease_token: token, lease_expires_at: this.expiry() })
      .where('id', '=', jobId)
      .where('status', '=', 'running')
      .where((eb) => eb.or([eb('lease_worker', '=', workerId), eb('lease_worker', 'is', null)]))
      .returning('id')
      .executeTakeFirst();
    return row ? { jobId, workerId, token } : null;
  }

  /** Whether some worker holds a live lease on the job. */
  async isHeld(jobId: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('jobs')
      .select('id')
      .where('id', '=', jobId)
      .where('lease_expires_at', '>', databaseNow(this.db))
      .executeTakeFirst();
    return row !== undefined;
  }

  private held(db: Db, lease: Lease) {
    return db
      .updateTable('jobs')
      .where('id', '=', lease.jobId)
      .where('lease_token', '=', lease.token)
      .where('lease_expires_at', '>', databaseNow(db));
  }

  private expiry() {
    return sql<number>`${databaseNow(this.db)} + ${this.ttlMs}`;
  }
}
