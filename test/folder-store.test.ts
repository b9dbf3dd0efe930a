import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalFolderStore, publishWith } from '../src/files/folder-store.js';
import { BASE_MODEL, startTestServer, tempHome, validated, weatherJokes } from './support/server.js';
import { storedNames } from './support/stored.js';

const root = tempHome();
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** A folder as the engine leaves one in its scratch folder. */
function scratchFolder(name: string, files: Record<string, string>): string {
  const folder = path.join(root, 'scratch', name);
  fs.mkdirSync(folder, { recursive: true });
  for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(folder, file), content);
  return folder;
}

describe('the local folder store', () => {
  const store = new LocalFolderStore(path.join(root, 'store'));
  const objects = (prefix: string) => (fs.existsSync(path.join(store.root, prefix)) ? fs.readdirSync(path.join(store.root, prefix)).sort() : []);

  it('takes a scratch folder by a rename, and shows it under its name only once committed', async () => {
    const source = scratchFolder('step-10', { 'adapter_model.safetensors': 'weights', 'training_state.pt': 'state' });
    const inode = fs.statSync(path.join(source, 'adapter_model.safetensors')).ino;
    const staged = await store.stage('ftjob-a', source);
    expect(fs.existsSync(source)).toBe(false);
    expect(objects('ftjob-a')).toEqual([expect.stringMatching(/^\.staged-/)]);

    const location = await staged.commit('step-10-abcdefgh');
    expect(location).toBe(path.join(store.root, 'ftjob-a', 'step-10-abcdefgh'));
    expect(objects('ftjob-a')).toEqual(['step-10-abcdefgh']);
    // Read in place: the same file, not a copy.
    const opened = await store.open(location);
    expect(fs.statSync(path.join(opened, 'adapter_model.safetensors')).ino).toBe(inode);

    await store.removeFiles(location, ['training_state.pt']);
    expect(fs.readdirSync(location)).toEqual(['adapter_model.safetensors']);
    await staged.discard();
    expect(fs.existsSync(location)).toBe(true);
  });

  const otherDisk = '/dev/shm';
  const onOtherDisk = fs.existsSync(otherDisk) && fs.statSync(otherDisk).dev !== fs.statSync(root).dev;

  it.skipIf(!onOtherDisk)('copies a scratch folder on another filesystem (a worker\'s local disk) into the store', async () => {
    const source = fs.mkdtempSync(path.join(otherDisk, 'tunelab-scratch-'));
    fs.mkdirSync(path.join(source, 'nested'));
    fs.writeFileSync(path.join(source, 'adapter_model.safetensors'), Buffer.alloc(3 * 1024 * 1024, 7));
    fs.writeFileSync(path.join(source, 'nested', 'config.json'), '{}');
    const location = await (await store.stage('ftjob-d', source)).commit('model-abcdefgh');
    expect(fs.existsSync(source)).toBe(false);
    expect(fs.readFileSync(path.join(location, 'adapter_model.safetensors')).equals(Buffer.alloc(3 * 1024 * 1024, 7))).toBe(true);
    expect(fs.readFileSync(path.join(location, 'nested', 'config.json'), 'utf8')).toBe('{}');
  });

  it('makes nothing visible when the transaction recording a folder is refused, before or after the commit', async () => {
    const refused = new Error('the lease on ftjob-b was lost');
    const before = await store.stage('ftjob-b', scratchFolder('step-20', { 'a.safetensors': 'x' }));
    await expect(publishWith(store, [{ folder: before, name: 'step-20-abcdefgh' }], () => Promise.reject(refused))).rejects.toBe(refused);
    const after = await store.stage('ftjob-b', scratchFolder('step-30', { 'a.safetensors': 'x' }));
    await expect(
      publishWith(store, [{ folder: after, name: 'step-30-abcdefgh' }], async (commit) => {
        await commit();
        throw refused;
      }),
    ).rejects.toBe(refused);
    expect(objects('ftjob-b')).toEqual([]);
  });

  it('sweeps what no record names, staged folders included, and keeps what one does', async () => {
    const kept = await (await store.stage('ftjob-c', scratchFolder('model', { 'a.safetensors': 'x' }))).commit('model-abcdefgh');
    await (await store.stage('ftjob-c', scratchFolder('step-5', { 'a.safetensors': 'x' }))).commit('step-5-abcdefgh');
    await store.stage('ftjob-c', scratchFolder('step-6', { 'a.safetensors': 'x' }));
    expect(await store.prefixes()).toContain('ftjob-c');
    await store.sweep('ftjob-c', new Set([kept]));
    expect(objects('ftjob-c')).toEqual(['model-abcdefgh']);
    await store.sweep('ftjob-c', new Set());
    expect(await store.prefixes()).not.toContain('ftjob-c');
  });
});

it("a server's start sweeps the store of an ended job of what a worker killed while publishing left there", async () => {
  const t = await startTestServer();
  try {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    // Queued with its arrays in the store (this server trains nothing), then cancelled: its clean-up empties the store of it.
    const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: file.id })).id);
    expect(job.status).toBe('queued');
    expect(storedNames(t.home, job.id)).toEqual(['train']);
    await t.client.fineTuning.jobs.cancel(job.id);
    await expect.poll(() => storedNames(t.home, job.id)).toEqual([]);
    for (const left of ['.staged-abcdefgh', 'step-10-abcdefgh']) {
      fs.mkdirSync(path.join(t.home, 'store', job.id, left), { recursive: true });
      fs.writeFileSync(path.join(t.home, 'store', job.id, left, 'adapter_model.safetensors'), 'weights');
    }
    await t.stop();
    const again = await startTestServer({ home: t.home });
    await again.stop();
    expect(storedNames(t.home, job.id)).toEqual([]);
  } finally {
    await t.cleanup();
  }
});
