import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { type Dialect, migrations } from './migrations.js';

export type Db = Kysely<Database>;

export interface Store {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
}

/**
 * Opens the database named by `location`: a `postgres://` URL, or a path to a SQLite file
 * (the embedded default), then brings its schema up to date.
 */
export async function openStore(location: string): Promise<Store> {
  const dialect: Dialect = /^postgres(ql)?:\/\//.test(location) ? 'postgres' : 'sqlite';
  const db = new Kysely<Database>({
    dialect: dialect === 'postgres' ? postgresDialect(location) : sqliteDialect(location),
  });
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations(dialect) } });
  const { error } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    throw new Error(`Could not migrate the database at ${location}: ${String(error)}`);
  }
  return { db, dialect, close: () => db.destroy() };
}

function sqliteDialect(file: string) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const database = new SqliteDatabase(file);
  // WAL lets readers run beside the writer and survives a killed process with every committed row.
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('foreign_keys = ON');
  database.pragma('busy_timeout = 5000');
  return new SqliteDialect({ database });
}

function postgresDialect(url: string) {
  // int8 (bigint) columns hold unix seconds and byte counts, all far below 2^53.
  pg.types.setTypeParser(20, (value) => Number(value));
  return new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 10 }) });
}
