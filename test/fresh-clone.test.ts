import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const run = promisify(execFile);

// About ten minutes (an empty npm cache, the engine's environment made from nothing, the demo),
// so it runs where CI=true is set, as .ci/run's environment is; by hand: bash scripts/fresh-clone-check.sh.
it.runIf(process.env.CI)('runs the README\'s first command to the fine-tune\'s answer from an empty clone and HOME', { timeout: 1_800_000 }, async () => {
  const { stdout } = await run('bash', [path.join(import.meta.dirname, '../scripts/fresh-clone-check.sh')], {
    timeout: 1_790_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  expect(stdout).toContain('fresh clone: the first command ran to the end');
});
