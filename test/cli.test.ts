import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from './support/cli.js';
import { writeModelFolder, writeTrainableModelFolder } from './support/model-folder.js';
import { DATASETS, tempHome } from './support/server.js';

/** The built `tunelab` command, as a user runs it: a server process and CLI calls beside it. */
const home = tempHome();
let server: ChildProcess;
let env: NodeJS.ProcessEnv;

async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => probe.once('listening', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

const tunelab = (...args: string[]) => runCli([...args, '--home', home], { env });

beforeAll(async () => {
  const port = await freePort();
  const { OPENAI_API_KEY: _k, OPENAI_BASE_URL: _u, TUNELAB_API_KEY: _t, ...rest } = process.env;
  // No base URL in the environment: the CLI finds the server through the home folder.
  env = rest;
  server = spawn(process.execPath, [CLI, 'serve', '--home', home, '--port', String(port)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  server.stdout!.on('data', (chunk) => (log += chunk));
  await new Promise<void>((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`server exited with ${code}: ${log}`)));
    server.stdout!.on('data', () => log.includes('tunelab serving') && resolve());
  });
  expect(log).toContain(`its API key is in ${path.join(home, 'api-key')}`);
});

afterAll(async () => {
  if (server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
  }
  fs.rmSync(home, { recursive: true, force: true });
});

describe('the tunelab command', () => {
  it('registers a base model folder, and explains a folder it cannot use', async () => {
    const folder = await writeTrainableModelFolder(path.join(home, 'downloads', 'Qwen3-tiny'));
    const added = await tunelab('models', 'add', folder, '--name', 'qwen3-tiny');
    expect(added).toMatchObject({ code: 0, stdout: expect.stringContaining('Registered qwen3-tiny') });
    expect(added.stdout).toContain('the engine generated from it');

    // Weights that do not match the config: refused now, with the engine's reason, not in a job later.
    const broken = writeModelFolder(path.join(home, 'downloads', 'broken'));
    const unusable = await tunelab('models', 'add', broken, '--name', 'broken');
    expect(unusable.code).toBe(1);
    expect(unusable.stderr).toContain('broken cannot be used: The engine cannot load it:');

    const gpt2 = writeModelFolder(path.join(home, 'downloads', 'gpt2'), 'gpt2');
    const refused = await tunelab('models', 'add', gpt2, '--name', 'gpt2');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('model_type "gpt2"');

    const listed = await tunelab('models', 'list');
    expect(listed.stdout).toMatch(/qwen3-tiny\s+system/);
    // What the arrival check found: parameters, context, dtype and memory (with the GPU it fits).
    expect(listed.stdout).toMatch(/qwen3-tiny\s+system\s+\S+\s+[\d.]+M\s+2048\s+float32\s+\d+ MB \(GPU 8 GB\)/);
    expect(listed.stdout).not.toContain('gpt2');
    expect(listed.stdout).not.toContain('broken');
  }, 180_000);

  it('uploads, starts a job, shows it and its events, and cancels it once', async () => {
    const upload = await tunelab('files', 'upload', path.join(DATASETS, 'weather-jokes.jsonl'), '--json');
    expect(upload.code).toBe(0);
    const file = JSON.parse(upload.stdout) as { id: string; bytes: number };
    expect(file.bytes).toBe(fs.statSync(path.join(DATASETS, 'weather-jokes.jsonl')).size);
    expect((await tunelab('files', 'list')).stdout).toMatch(new RegExp(`${file.id}\\s+weather-jokes.jsonl\\s+fine-tune`));

    const create = await tunelab(
      'jobs', 'create', '--model', 'qwen3-tiny', '--training-file', file.id, '--suffix', 'jokes', '--n-epochs', '3', '--json',
    );
    expect(create.code).toBe(0);
    const job = JSON.parse(create.stdout) as { id: string; hyperparameters: Record<string, unknown> };
    expect(job.hyperparameters).toEqual({ n_epochs: 3, batch_size: 'auto', learning_rate_multiplier: 'auto' });

    expect((await tunelab('jobs', 'list')).stdout).toMatch(new RegExp(`${job.id}\\s+(validating_files|queued)\\s+qwen3-tiny\\s+jokes`));
    expect(JSON.parse((await tunelab('jobs', 'get', job.id)).stdout)).toMatchObject({ id: job.id, user_provided_suffix: 'jokes' });
    const events = (await tunelab('jobs', 'events', job.id)).stdout.trim().split('\n');
    expect(events[0]).toContain(`Created fine-tuning job: ${job.id}`);
    expect(events[1]).toContain(`Validating training file: ${file.id}`);

    expect((await tunelab('jobs', 'cancel', job.id)).stdout).toContain(`${job.id}  cancelled`);
    const again = await tunelab('jobs', 'cancel', job.id);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('only a job that is validating_files or queued or running or paused can be cancelled');
  });

  it('creates a key for a new organization that sees none of the first one', async () => {
    const created = await tunelab('keys', 'create', '--org', 'acme');
    const key = created.stdout.trim();
    expect(key).toMatch(/^sk-tl-/);
    const acme = await runCli(['files', 'list', '--json'], { env: { ...env, TUNELAB_API_KEY: key, TUNELAB_HOME: home } });
    expect(JSON.parse(acme.stdout)).toEqual([]);
  });

  it('says what is wrong with a bad API key', async () => {
    const result = await runCli(['jobs', 'list'], { env: { ...env, TUNELAB_API_KEY: 'sk-tl-wrong', TUNELAB_HOME: home } });
    expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining('Incorrect API key provided') });
  });
});
