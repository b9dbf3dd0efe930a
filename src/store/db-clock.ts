import { PostgresAdapter, type RawBuilder, sql } from 'kysely';
import type { Db } from './store.js';

/**
 * Now in milliseconds by the database's clock: leases are compared on one clock, whichever host
 * holds them, so hosts whose clocks drift apart still agree on when a lease expires.
 */
export function databaseNow(db: Db): RawBuilder<number> {
  return db.getExecutor().adapter instanceof PostgresAdapter
    ? sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`
    : sql<number>`cast((julianday('now') - 2440587.5) * 86400000 as integer)`;
}

/** PostgreSQL takes rows with `FOR UPDATE SKIP LOCKED`; SQLite has one writer at a time and needs no lock. */
export const isPostgres = (db: Db) => db.getExecutor().adapter instanceof PostgresAdapter;
