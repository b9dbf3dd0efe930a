import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { ModelExport } from '../src/export/exports.js';
import { runCli } from './support/cli.js';
import { weatherFineTune } from './support/fine-tune.js';
import { type TestServer, startTestServer, tempHome } from './support/server.js';

/**
 * What `tunelab setup --export` installs stays when the home's engine environment is made again,
 * and an export that finds a package missing says how to get it back. No package is installed
 * here: the environment's Python is a stand-in that records what setup asks of it.
 */

const ENGINE = path.resolve(import.meta.dirname, '../engine');
const homes: string[] = [];
let t: TestServer | undefined;
afterAll(async () => {
  await t?.cleanup();
  for (const home of homes) fs.rmSync(home, { recursive: true, force: true });
});

/** A converter folder as `setup --export` leaves it, whose first import is of a package the engine's Python lacks. */
function writeConverter(home: string): void {
  const converter = path.join(home, 'tools', 'llama.cpp-converter');
  fs.mkdirSync(converter, { recursive: true });
  fs.writeFileSync(path.join(converter, 'convert_hf_to_gguf.py'), 'import tunelab_absent_module  # noqa: F401\n');
}

/**
 * `<home>/python` with a stand-in for its Python: pip installs succeed and are recorded in
 * calls.log, the probe answers as a CPU torch would, and engine commands fail (no C kernels).
 */
function writeStandInEnvironment(home: string): string {
  const bin = path.join(home, 'python', 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const log = path.join(home, 'python', 'calls.log');
  const probe = JSON.stringify({
    python: path.join(bin, 'python'),
    pythonVersion: '3.11.7',
    torch: '2.13.0',
    numpy: '2.2.0',
    safetensors: '0.5.0',
    device: 'cpu',
    gpus: [],
    bf16: false,
  });
  fs.writeFileSync(
    path.join(bin, 'python'),
    `#!/bin/sh\necho "$*" >> '${log}'\ncase "$1 $2" in\n  "-m pip") exit 0 ;;\n  "-c "*) echo '${probe}' ;;\n  *) exit 1 ;;\nesac\n`,
    { mode: 0o755 },
  );
  return log;
}

/** The environment's `pip install` lines, as setup ran them. */
const pipInstalls = (log: string) => fs.readFileSync(log, 'utf8').split('\n').filter((line) => line.startsWith('-m pip install'));

it("setting a home's environment up again keeps the export converter's packages while the converter is there", async () => {
  const env = { ...process.env };
  // The home's own environment, not the tests' Python.
  delete env.TUNELAB_PYTHON;
  const withConverter = tempHome();
  const without = tempHome();
  homes.push(withConverter, without);
  writeConverter(withConverter);
  const logs = [writeStandInEnvironment(withConverter), writeStandInEnvironment(without)];

  for (const home of [withConverter, without]) {
    const setup = await runCli(['setup', '--home', home], { env });
    expect(setup.code, setup.stderr).toBe(0);
    expect(setup.stdout).toContain('Python 3.11.7');
  }
  const [kept, plain] = logs.map(pipInstalls);
  expect(kept).toHaveLength(1);
  expect(kept![0]).toContain(`-r ${path.join(ENGINE, 'requirements.txt')}`);
  expect(kept![0]).toContain(`-r ${path.join(ENGINE, 'requirements-export.txt')}`);
  // A home that never had the converter gets only the engine's packages.
  expect(plain).toHaveLength(1);
  expect(plain![0]).not.toContain('requirements-export.txt');
});

it('an export whose converter misses a Python package fails saying to run `tunelab setup --export`', async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  const model = (await weatherFineTune(t.client)).fine_tuned_model!;
  writeConverter(t.home);
  let job = await t.client.post<ModelExport>('/exports', { body: { model, format: 'gguf', quantization: 'f16' } });
  while (job.status === 'queued' || job.status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 250));
    job = await t.client.get<ModelExport>(`/exports/${job.id}`);
  }
  expect(job.status).toBe('failed');
  expect(job.error).toEqual({
    code: 'converter_dependency_missing',
    message:
      "llama.cpp's converter failed: ModuleNotFoundError: No module named 'tunelab_absent_module'. The engine's Python lacks " +
      'tunelab_absent_module, which the converter imports: run `tunelab setup --export` on this server.',
  });
}, 300_000);
