import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** PostgreSQL's server programs, where Debian's postgresql package puts them. */
export function findPostgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return undefined;
  const versions = fs.readdirSync(root).sort((a, b) => Number(b) - Number(a));
  return versions.map((v) => path.join(root, v, 'bin')).find((bin) => fs.existsSync(path.join(bin, 'initdb')));
}

export interface Postgres {
  /** Connection URL of the `postgres` database, for creating others. */
  adminUrl: string;
  stop(): void;
}

/**
 * A throwaway PostgreSQL cluster in a temporary folder, reached by a Unix socket only and with
 * durability off: it lives as long as the test run.
 */
export function startPostgres(bin: string): Postgres {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-pg-'));
  // PostgreSQL refuses to run as root; the package's own user runs it then.
  const asOwner = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
  if (asOwner.length) execFileSync('chown', ['postgres', dir]);
  const run = (program: string, args: string[]) => {
    const [command, ...rest] = [...asOwner, path.join(bin, program), ...args];
    execFileSync(command!, rest, { stdio: 'pipe' });
  };
  const data = path.join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  run('pg_ctl', [
    '-D', data, '-l', path.join(dir, 'log'), '-w', 'start',
    '-o', `-k ${dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
  ]);
  return {
    adminUrl: `postgresql://postgres@localhost/postgres?host=${encodeURIComponent(dir)}`,
    stop: () => {
      run('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
