import fs from 'node:fs';
import path from 'node:path';

/**
 * A job's objects in the folder store (`<home>/store/<job>`, src/files/folder-store.ts), each by
 * its name without the random suffix (`arrays`, `step-20`, `model`) and its folder; staged
 * folders (`.staged-…`) named `.staged`.
 */
export function storedObjects(home: string, jobId: string): Array<{ name: string; folder: string }> {
  const root = path.join(home, 'store', jobId);
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .sort()
    .map((entry) => ({ name: entry.startsWith('.staged-') ? '.staged' : entry.replace(/-[A-Za-z0-9]{8}$/, ''), folder: path.join(root, entry) }));
}

export const storedNames = (home: string, jobId: string) => storedObjects(home, jobId).map((object) => object.name);

/** The folder of the job's object named `name` (see storedObjects); throws when there is none. */
export function storedFolder(home: string, jobId: string, name: string): string {
  const found = storedObjects(home, jobId).filter((object) => object.name === name);
  if (found.length !== 1) throw new Error(`${found.length} objects named ${name} in the store for ${jobId}: ${storedNames(home, jobId).join(', ')}`);
  return found[0]!.folder;
}
