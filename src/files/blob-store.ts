import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomToken } from '../ids.js';
import { syncFolder } from './durable.js';

/** Bytes received and held aside: they become a blob only on `commit`. */
export interface StagedBlob {
  readonly bytes: number;
  readonly sha256: string;
  commit(id: string): Promise<void>;
  /** Throws the bytes away; does nothing once committed. */
  discard(): Promise<void>;
}

/**
 * Where uploaded and result files live. The local folder is the embedded default; an
 * S3-compatible store implements the same four operations.
 */
export interface BlobStore {
  stage(content: Readable): Promise<StagedBlob>;
  read(id: string): Readable;
  remove(id: string): Promise<void>;
  /** Forgets whatever an earlier process left half-written, and blobs no row names. */
  sweep(keep: ReadonlySet<string>): Promise<void>;
}

const EARLY_SYNC_BYTES = 8 * 1024 * 1024;

export class LocalBlobStore implements BlobStore {
  private readonly incoming: string;

  constructor(private readonly root: string) {
    this.incoming = path.join(root, '.incoming');
    fs.mkdirSync(this.incoming, { recursive: true });
  }

  async stage(content: Readable): Promise<StagedBlob> {
    // Written under a temporary name in the same folder, so the final rename is atomic:
    // a reader sees the whole file or no file.
    const temporary = path.join(this.incoming, randomToken(16));
    const hash = createHash('sha256');
    let bytes = 0;
    const file = await fsp.open(temporary, 'wx', 0o600);
    // The bytes must be on disk before the row names them. Syncing what has arrived every few
    // megabytes, while more arrives, leaves the final sync only the tail to wait for.
    let syncing: Promise<void> | undefined;
    let syncFailure: unknown;
    let syncedUpTo = 0;
    try {
      await pipeline(
        content,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            hash.update(chunk);
            bytes += chunk.length;
            yield chunk;
            if (!syncing && bytes - syncedUpTo >= EARLY_SYNC_BYTES) {
              syncedUpTo = bytes;
              syncing = file
                .datasync()
                .catch((error: unknown) => {
                  syncFailure ??= error;
                })
                .finally(() => (syncing = undefined));
            }
          }
        },
        file.createWriteStream({ highWaterMark: 256 * 1024, flush: true }),
      );
      // A failed sync may not fail again later: what it could not write must not be committed.
      if (syncFailure) throw syncFailure;
    } catch (error) {
      await syncing;
      await file.close().catch(() => {});
      await fsp.rm(temporary, { force: true });
      throw error;
    }
    const sha256 = hash.digest('hex');
    let settled = false;
    return {
      bytes,
      sha256,
      commit: async (id) => {
        await fsp.rename(temporary, this.pathOf(id));
        settled = true;
        await syncFolder(this.root);
      },
      discard: async () => {
        if (settled) return;
        settled = true;
        await fsp.rm(temporary, { force: true });
      },
    };
  }

  read(id: string): Readable {
    return fs.createReadStream(this.pathOf(id));
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(this.pathOf(id), { force: true });
  }

  async sweep(keep: ReadonlySet<string>): Promise<void> {
    await fsp.rm(this.incoming, { recursive: true, force: true });
    await fsp.mkdir(this.incoming, { recursive: true });
    for (const entry of await fsp.readdir(this.root, { withFileTypes: true })) {
      if (entry.isFile() && !keep.has(entry.name)) await fsp.rm(path.join(this.root, entry.name), { force: true });
    }
  }

  private pathOf(id: string): string {
    if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new Error(`Not a blob id: ${id}`);
    return path.join(this.root, id);
  }
}
