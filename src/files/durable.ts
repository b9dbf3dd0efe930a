import fsp from 'node:fs/promises';
import path from 'node:path';

/** Makes a rename or a new file in `folder` survive a power cut: the folder's entry is synced too. */
export async function syncFolder(folder: string): Promise<void> {
  const handle = await fsp.open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes a small private file (mode 0600) under a temporary name, syncs it, then renames it:
 * a reader never sees half of it, and once this returns it is on disk.
 */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  const handle = await fsp.open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.rename(temporary, file);
  await syncFolder(path.dirname(file));
}
