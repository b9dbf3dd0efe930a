import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/**
 * Whether an error means the disk (or the database's disk) is full: a system call's ENOSPC or
 * EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100), or the engine's words for it.
 */
export function isDiskFull(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL' || code === '53100') return true;
  return DISK_FULL_WORDS.test(error.message);
}

/** How Python (errno 28), torch's writer, safetensors and SQLite say it in text. */
export const DISK_FULL_WORDS =
  /No space left on device|\[Errno 28\]|StorageFull|database or disk is full|Disk quota exceeded|PytorchStreamWriter failed writing file/i;

/** "1.4 MB", "312 MB": sizes in the messages people read when a disk is full. */
export function megabytes(bytes: number): string {
  const mb = bytes / 1e6;
  return `${mb < 10 ? Math.max(0, mb).toFixed(1) : Math.round(mb)} MB`;
}

/** A few megabytes set aside, so a job that fails for a full disk can still be recorded as failed. */
const RESERVE_BYTES = 4 * 1024 * 1024;
/** How often a write the disk refused is tried again, once the reserve is spent. */
const RETRY_MS = 1000;

/**
 * The disk the home folder is on: how much is free, and a reserve file that is let go when a
 * write that must happen (a job's failure) meets a full disk.
 */
export class DiskSpace {
  constructor(
    /** The folder whose disk this is; named in messages. */
    readonly root: string,
    private readonly reserveFile: string,
  ) {}

  freeBytes(folder = this.root): number {
    // A folder not made yet is on the disk of the nearest one that is.
    let existing = folder;
    while (!fs.existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
    const stats = fs.statfsSync(existing);
    return stats.bavail * stats.bsize;
  }

  /** "No space left on device while <doing> (needs about X MB, Y MB free)", of the disk `folder` is on. */
  fullMessage(doing: string, neededBytes?: number, folder = this.root): string {
    const free = megabytes(this.freeBytes(folder));
    const room = neededBytes === undefined ? `${free} free on the disk of ${folder}` : `needs about ${megabytes(neededBytes)}, ${free} free`;
    return `No space left on device while ${doing} (${room})`;
  }

  /** Writes the reserve if it is not there; a disk too full to hold it is left as it is. */
  async setAside(): Promise<void> {
    if (fs.existsSync(this.reserveFile)) return;
    const temporary = `${this.reserveFile}.tmp`;
    try {
      // Real bytes, not a sparse file: the point is that the blocks are taken.
      await fsp.writeFile(temporary, Buffer.alloc(RESERVE_BYTES), { mode: 0o600 });
      await fsp.rename(temporary, this.reserveFile);
    } catch (error) {
      await fsp.rm(temporary, { force: true });
      if (!isDiskFull(error)) throw error;
    }
  }

  async release(): Promise<void> {
    await fsp.rm(this.reserveFile, { force: true });
  }

  /**
   * Runs a write that must happen. Refused for space, it is tried again once the reserve is let
   * go, then every second until it goes through or `stopped()` says to give up.
   */
  async persist<T>(write: () => Promise<T>, stopped: () => boolean): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await write();
      } catch (error) {
        if (!isDiskFull(error) || stopped()) throw error;
        if (attempt === 0) await this.release();
        else await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }
}
