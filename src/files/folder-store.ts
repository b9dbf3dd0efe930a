import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomToken } from '../ids.js';
import { syncFolder } from './durable.js';

/** A folder put into the store and named by no record yet: it becomes an object on `commit`. */
export interface StagedFolder {
  /**
   * Makes it the object `<prefix>/<name>` and returns its location, what records name. Called
   * inside the transaction that records it, after the lease is checked: the object and its record
   * appear together, or (the caller removing it when the transaction fails) neither.
   */
  commit(name: string): Promise<string>;
  /** Throws the bytes away; does nothing once committed. */
  discard(): Promise<void>;
}

/**
 * Where training keeps its folders: a job's training arrays, its checkpoints and its fine-tuned
 * model. Objects are folders of files under a job's prefix; the database names each object it
 * keeps by its location, and an object no record names is garbage (`sweep`). Writers and readers
 * never share a folder: the engine writes into a worker's own scratch folder, and what it wrote
 * enters the store only by `stage` and `commit`. The local folder (on NFS and the like when
 * workers share it) is the default; an S3-compatible store implements the same operations.
 */
export interface FolderStore {
  /** Takes `scratchFolder` (moved where it can be, else copied) into the store under `prefix`, unnamed. */
  stage(prefix: string, scratchFolder: string): Promise<StagedFolder>;
  /**
   * A folder on this host holding the object's files, to read and never write: the object itself
   * when the store is a local folder, else a copy fetched into `scratchFolder`.
   */
  open(location: string, scratchFolder: string): Promise<string>;
  /** Deletes some files of an object (the optimizer state of a checkpoint that is no longer resumed from). */
  removeFiles(location: string, names: readonly string[]): Promise<void>;
  remove(location: string): Promise<void>;
  /** Removes what is under `prefix` that `keep` does not name: staged folders and objects whose records are gone. */
  sweep(prefix: string, keep: ReadonlySet<string>): Promise<void>;
  /** The prefixes that hold anything. */
  prefixes(): Promise<string[]>;
}

/**
 * Makes staged folders objects and records them in one transaction, which `write` opens (proving
 * a lease first, where one holds the job) and calls `commit` in: the objects appear with their
 * records. A transaction that does not commit takes them away again.
 */
export async function publishWith<T>(
  store: FolderStore,
  staged: ReadonlyArray<{ folder: StagedFolder; name: string }>,
  write: (commit: () => Promise<string[]>) => Promise<T>,
): Promise<T> {
  const committed: string[] = [];
  try {
    return await write(async () => {
      for (const { folder, name } of staged) committed.push(await folder.commit(name));
      return committed;
    });
  } catch (error) {
    await Promise.all([...staged.map(({ folder }) => folder.discard()), ...committed.map((location) => store.remove(location))]);
    throw error;
  }
}

const STAGED = '.staged-';

/**
 * The store as a folder (`<home>/store`): an object's location is its absolute path, which the
 * engine and the model servers read in place. Staging and committing are renames within one
 * filesystem, so a checkpoint or a model of many gigabytes is never copied when the scratch
 * folder is on the store's filesystem (the server's `<home>/work`).
 */
export class LocalFolderStore implements FolderStore {
  constructor(readonly root: string) {
    fs.mkdirSync(root, { recursive: true });
  }

  async stage(prefix: string, scratchFolder: string): Promise<StagedFolder> {
    const folder = this.prefixFolder(prefix);
    await fsp.mkdir(folder, { recursive: true });
    const staged = path.join(folder, `${STAGED}${randomToken(16)}`);
    await moveFolder(scratchFolder, staged);
    let settled = false;
    return {
      commit: async (name) => {
        if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.startsWith('.')) throw new Error(`Not an object name: ${name}`);
        const location = path.join(folder, name);
        await fsp.rename(staged, location);
        settled = true;
        await syncFolder(folder);
        return location;
      },
      discard: async () => {
        if (settled) return;
        settled = true;
        await fsp.rm(staged, { recursive: true, force: true });
      },
    };
  }

  async open(location: string): Promise<string> {
    return this.checked(location);
  }

  async removeFiles(location: string, names: readonly string[]): Promise<void> {
    const folder = this.checked(location);
    await Promise.all(names.map((name) => fsp.rm(path.join(folder, path.basename(name)), { force: true })));
  }

  async remove(location: string): Promise<void> {
    await fsp.rm(this.checked(location), { recursive: true, force: true });
  }

  async sweep(prefix: string, keep: ReadonlySet<string>): Promise<void> {
    const folder = this.prefixFolder(prefix);
    if (!fs.existsSync(folder)) return;
    const entries = await fsp.readdir(folder);
    await Promise.all(entries.map((name) => path.join(folder, name)).filter((entry) => !keep.has(entry)).map((entry) => fsp.rm(entry, { recursive: true, force: true })));
    if ((await fsp.readdir(folder)).length === 0) await fsp.rm(folder, { recursive: true, force: true });
  }

  async prefixes(): Promise<string[]> {
    return (await fsp.readdir(this.root, { withFileTypes: true })).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  }

  private prefixFolder(prefix: string): string {
    if (!/^[A-Za-z0-9_-]+$/.test(prefix)) throw new Error(`Not a store prefix: ${prefix}`);
    return path.join(this.root, prefix);
  }

  /**
   * Locations are absolute paths. Models trained before the store existed name folders elsewhere
   * in the home folder (`adapters/`, `work/`); they are read and removed where they are.
   */
  private checked(location: string): string {
    if (!path.isAbsolute(location) || path.resolve(location) !== location) throw new Error(`Not a location in the folder store: ${location}`);
    return location;
  }
}

/** A rename where the two folders share a filesystem; a copy (then the source removed) where they do not. */
async function moveFolder(from: string, to: string): Promise<void> {
  try {
    await fsp.rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    try {
      await fsp.cp(from, to, { recursive: true, errorOnExist: true, force: false });
    } catch (copying) {
      await fsp.rm(to, { recursive: true, force: true });
      throw copying;
    }
    await fsp.rm(from, { recursive: true, force: true });
  }
}
