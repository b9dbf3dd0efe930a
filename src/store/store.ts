import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { type DatabaseConnection, Kysely, Migrator, PostgresDialect, SqliteDialect, SqliteDriver } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { type Dialect, migrations } from './migrations.js';

export type Db = Kysely<Database>;

export interface Store {
  db: Db;
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
  return { db, close: () => db.destroy() };
}

function sqliteDialect(file: string) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const database = new SqliteDatabase(file);
  // WAL lets readers run beside the writer and survives a killed process with every committed row.
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('foreign_keys = ON');
  database.pragma('busy_timeout = 5000');
  // Files made by an older server, before it set its umask: the database holds training data and secrets.
  for (const suffix of ['', '-wal', '-shm']) if (fs.existsSync(file + suffix)) fs.chmodSync(file + suffix, 0o600);
  return new SqliteStoreDialect(withStatementCache(database));
}

/**
 * SQLite rolls a transaction back by itself when a write fails for a full disk (or an I/O error); the
 * rollback Kysely then sends fails with "cannot rollback - no transaction is active", and that error
 * would replace the one that says what happened.
 */
class SqliteStoreDialect extends SqliteDialect {
  constructor(private readonly database: SqliteDatabase.Database) {
    super({ database });
  }

  override createDriver() {
    const database = this.database;
    return new (class extends SqliteDriver {
      override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
        if (database.inTransaction) await super.rollbackTransaction(connection);
      }
    })({ database });
  }
}

/**
 * Kysely prepares every query afresh; preparing costs a third of a short query's time. The
 * query builder produces the same SQL text for the same shape of query, so statements are
 * kept by their text. A full cache is emptied rather than tracked: shapes are few.
 */
function withStatementCache(database: SqliteDatabase.Database): SqliteDatabase.Database {
  const cache = new Map<string, SqliteDatabase.Statement>();
  const prepare = database.prepare.bind(database);
  database.prepare = ((sql: string) => {
    let statement = cache.get(sql);
    if (!statement) {
      if (cache.size >= 500) cache.clear();
      statement = prepare(sql);
      cache.set(sql, statement);
    }
    return statement;
  }) as typeof database.prepare;
  return database;
}

function postgresDialect(url: string) {
  // int8 (bigint) columns hold unix seconds and byte counts, all far below 2^53.
  pg.types.setTypeParser(20, (value) => Number(value));
  return new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 10 }) });
}
