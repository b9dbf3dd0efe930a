import { PostgresAdapter, sql } from 'kysely';
import type { Db } from './store.js';

/** Any fixed number: the advisory lock that job-event writers take in turn ("tlev" in ASCII). */
const EVENT_ORDER_LOCK = 0x746c6576;

/**
 * Runs `work`, which adds job events, in a transaction that takes its turn among all that do.
 * A `seq` is drawn when a row is inserted, not when it commits: on PostgreSQL two transactions can
 * commit in the opposite order, and a reader that saw the later `seq` first would never look back
 * for the earlier one (`jobs follow`, the dashboard's newer-events loop). Holding one lock from the
 * insert to the commit makes `seq` order commit order. SQLite has one writer at a time already.
 */
export async function inEventOrder<T>(db: Db, work: (trx: Db) => Promise<T>): Promise<T> {
  if (!db.isTransaction) return db.transaction().execute((trx) => inEventOrder(trx, work));
  if (db.getExecutor().adapter instanceof PostgresAdapter) await sql`select pg_advisory_xact_lock(${EVENT_ORDER_LOCK})`.execute(db);
  return work(db);
}
