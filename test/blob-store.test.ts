import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { LocalBlobStore } from '../src/files/blob-store.js';
import { tempHome } from './support/server.js';

const root = tempHome();
afterEach(() => vi.restoreAllMocks());
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const megabytes = (n: number) => Readable.from(Array.from({ length: n }, (_, i) => Buffer.alloc(1024 * 1024, i)));
const leftovers = () => fs.readdirSync(path.join(root, '.incoming'));

describe('the local blob store', () => {
  it('keeps nothing when the disk fails to sync part of an upload, though later syncs succeed', async () => {
    const store = new LocalBlobStore(root);
    const probe = await fsp.open(path.join(root, 'probe'), 'w');
    const FileHandle = Object.getPrototypeOf(probe) as { datasync(): Promise<void> };
    await probe.close();
    fs.rmSync(path.join(root, 'probe'));
    vi.spyOn(FileHandle, 'datasync').mockRejectedValueOnce(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));

    await expect(store.stage(megabytes(20))).rejects.toThrow('EIO');
    expect(leftovers()).toEqual([]);
  });

  it('commits whole files under their id, with size and sha256', async () => {
    const store = new LocalBlobStore(root);
    const staged = await store.stage(megabytes(20));
    expect(staged.bytes).toBe(20 * 1024 * 1024);
    await staged.commit('file-abc');
    const stored = fs.readFileSync(path.join(root, 'file-abc'));
    expect(stored.length).toBe(staged.bytes);
    expect(createHash('sha256').update(stored).digest('hex')).toBe(staged.sha256);
    await staged.discard();
    expect(fs.existsSync(path.join(root, 'file-abc'))).toBe(true);
    expect(leftovers()).toEqual([]);
  });
});
