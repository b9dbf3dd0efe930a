import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { repoFromFolder, startHub, type LoopbackHub } from './support/hub-server.js';
import { writeModelFolder, writeTrainableModelFolder } from './support/model-folder.js';
import { startTestServer } from './support/server.js';

/**
 * `tunelab models pull` against a Hugging Face Hub on loopback: the real client library, the
 * standard cache layout (checked by Python's huggingface_hub filling the cache and tunelab finding
 * it), resumes, hash checks, gated repositories, refused architectures and offline mode.
 */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-hub-'));
const python = process.env.TUNELAB_PYTHON ?? '/usr/bin/python3';
const TOKEN = 'hf_loopbacktoken';
let hub: LoopbackHub;
let weightsSha256: string;

beforeAll(async () => {
  const tiny = await writeTrainableModelFolder(path.join(root, 'source', 'tiny'));
  weightsSha256 = createHash('sha256').update(fs.readFileSync(path.join(tiny, 'model.safetensors'))).digest('hex');
  // A GPT-2 config with weights: the weights must never be asked for.
  const gpt2 = writeModelFolder(path.join(root, 'source', 'gpt2'), 'gpt2');
  hub = await startHub([
    repoFromFolder('tunelab-test/Tiny-Qwen3', tiny),
    repoFromFolder('tunelab-test/Gated-Qwen3', tiny, { gated: { token: TOKEN } }),
    repoFromFolder('tunelab-test/gpt2-like', gpt2),
  ]);
}, 120_000);

afterAll(async () => {
  await hub?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A home and a Hugging Face cache of its own for each case, unless one is shared on purpose. */
function place(name: string, hfHome = path.join(root, name, 'hf')) {
  const home = path.join(root, name, 'tunelab');
  const { HF_TOKEN: _t, HF_HUB_OFFLINE: _o, HF_HUB_CACHE: _c, ...rest } = process.env;
  const env = { ...rest, HF_ENDPOINT: hub.url, HF_HOME: hfHome, TUNELAB_PYTHON: python };
  return { home, hfHome, env, pull: (args: string[], extra: NodeJS.ProcessEnv = {}) => runCli(['models', 'pull', ...args, '--home', home], { env: { ...env, ...extra } }) };
}

const weightRequests = () => hub.requests.filter((r) => r.path.endsWith('.safetensors'));
const cacheFolder = (hfHome: string, repo: string) => path.join(hfHome, 'hub', `models--${repo.replace('/', '--')}`);

describe('tunelab models pull', () => {
  it('downloads into the Hugging Face cache, checks the model on arrival, and serves a second pull from the cache', async () => {
    const first = place('first');
    const pulled = await first.pull(['tunelab-test/Tiny-Qwen3']);
    expect(pulled.stderr).toBe('');
    expect(pulled).toMatchObject({ code: 0, stdout: expect.stringContaining('Registered tiny-qwen3') });
    expect(pulled.stdout).toMatch(/qwen3 model, [\d.]+M parameters in float32, context 2048 tokens/);
    expect(pulled.stdout).toContain('the engine generated from it');

    const storage = cacheFolder(first.hfHome, 'tunelab-test/Tiny-Qwen3');
    const commit = fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8');
    const weights = path.join(storage, 'snapshots', commit, 'model.safetensors');
    // The layout transformers reads: a relative link from the snapshot to a blob named by its sha256.
    expect(fs.readlinkSync(weights)).toBe(`../../blobs/${weightsSha256}`);
    expect(fs.realpathSync(path.join(first.home, 'models', 'tiny-qwen3'))).toBe(path.join(storage, 'snapshots', commit));
    const report = JSON.parse(fs.readFileSync(path.join(first.home, 'models', '.checks', 'tiny-qwen3.json'), 'utf8'));
    expect(report).toMatchObject({ usable: true, loaded: true, modelType: 'qwen3', contextLength: 2048, dtype: 'float32' });
    expect(report.parameters).toBeGreaterThan(9_000_000);

    // Another tunelab home over the same cache: nothing large is fetched again.
    const before = weightRequests().length;
    const second = place('second', first.hfHome);
    const again = await second.pull(['tunelab-test/Tiny-Qwen3', '--name', 'again', '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ name: 'again', downloaded_bytes: 0, commit });
    expect(weightRequests().length).toBe(before);
  });

  it('finds a model Python huggingface_hub put in the cache, and fetches none of it', async () => {
    const place1 = place('python-cache');
    await promisify(execFile)(python, ['-c', 'import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))', 'tunelab-test/Tiny-Qwen3'], {
      env: place1.env,
    });
    const before = hub.requests.filter((r) => r.path.includes('/resolve/') || r.path.startsWith('/cdn/')).length;
    const pulled = await place1.pull(['tunelab-test/Tiny-Qwen3']);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.stdout).toContain('(0.0 MB downloaded)');
    expect(hub.requests.filter((r) => r.path.includes('/resolve/') || r.path.startsWith('/cdn/')).length).toBe(before);

    // And offline, with no request at all.
    const count = hub.requests.length;
    const offline = await place1.pull(['tunelab-test/Tiny-Qwen3', '--name', 'offline-copy'], { HF_HUB_OFFLINE: '1' });
    expect(offline.code, offline.stderr).toBe(0);
    expect(hub.requests.length).toBe(count);
  });

  it('resumes an interrupted download where it stopped', async () => {
    const here = place('resume');
    hub.cutOnce('model.safetensors', 1 << 20);
    const cut = await here.pull(['tunelab-test/Tiny-Qwen3']);
    expect(cut.code).toBe(1);
    const partial = path.join(cacheFolder(here.hfHome, 'tunelab-test/Tiny-Qwen3'), 'blobs', `${weightsSha256}.incomplete`);
    expect(fs.statSync(partial).size).toBe(1 << 20);

    const resumed = await here.pull(['tunelab-test/Tiny-Qwen3']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const ranges = weightRequests().map((r) => r.range);
    expect(ranges).toContain(`bytes=${1 << 20}-${fs.statSync(path.join(root, 'source', 'tiny', 'model.safetensors')).size - 1}`);
    expect(fs.existsSync(partial)).toBe(false);
  });

  it('detects a corrupted download and keeps nothing of it', async () => {
    const here = place('corrupt');
    hub.corrupt('model.safetensors');
    try {
      const pulled = await here.pull(['tunelab-test/Tiny-Qwen3']);
      expect(pulled.code).toBe(1);
      expect(pulled.stderr).toMatch(/model\.safetensors arrived corrupted \(sha256 [0-9a-f]{64}, the hub says [0-9a-f]{64}\)/);
      const blobs = path.join(cacheFolder(here.hfHome, 'tunelab-test/Tiny-Qwen3'), 'blobs');
      expect(fs.readdirSync(blobs).filter((name) => name.startsWith(weightsSha256))).toEqual([]);
      expect(fs.existsSync(path.join(here.home, 'models', 'tiny-qwen3'))).toBe(false);
    } finally {
      hub.corrupt(null);
    }
  });

  it('says where to accept the licence of a gated repository and that HF_TOKEN is needed', async () => {
    const here = place('gated');
    const anonymous = await here.pull(['tunelab-test/Gated-Qwen3']);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain(`Accept its licence at ${hub.url}/tunelab-test/Gated-Qwen3`);
    expect(anonymous.stderr).toContain('set HF_TOKEN');

    const wrong = await here.pull(['tunelab-test/Gated-Qwen3'], { HF_TOKEN: 'hf_someoneelse' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('the token in HF_TOKEN was refused for it (403)');

    // The token `hf auth login` saves in HF_HOME is used as huggingface_hub uses it.
    fs.mkdirSync(here.hfHome, { recursive: true });
    fs.writeFileSync(path.join(here.hfHome, 'token'), `${TOKEN}\n`);
    const allowed = await here.pull(['tunelab-test/Gated-Qwen3']);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stdout).toContain('Registered gated-qwen3');
  });

  it('refuses an architecture it does not train before asking for its weights', async () => {
    const here = place('gpt2');
    const pulled = await here.pull(['tunelab-test/gpt2-like']);
    expect(pulled.code).toBe(1);
    expect(pulled.stderr).toContain('tunelab-test/gpt2-like is a "gpt2" model (config.json model_type); tunelab trains llama, mistral, qwen2, qwen3');
    expect(hub.requests.filter((r) => r.path.includes('gpt2-like') && r.path.endsWith('.safetensors'))).toEqual([]);
  });

  it('offline, names what the cache lacks', async () => {
    const here = place('offline-empty');
    const pulled = await here.pull(['tunelab-test/Tiny-Qwen3'], { HF_HUB_OFFLINE: '1' });
    expect(pulled.code).toBe(1);
    expect(pulled.stderr).toContain('HF_HUB_OFFLINE is set and tunelab-test/Tiny-Qwen3@main is not in the Hugging Face cache');
  });
});

describe('POST /v1/models/pulls', () => {
  it("pulls for the administrator's key, shows the model with its facts, and refuses other organizations", async () => {
    const here = place('api');
    const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HOME: process.env.HF_HOME };
    // The server reads the Hugging Face variables of its own process, as `tunelab serve` would.
    Object.assign(process.env, { HF_ENDPOINT: hub.url, HF_HOME: here.hfHome });
    const t = await startTestServer();
    try {
      type Pull = { id: string; status: string; model: string | null; error: { message: string } | null; total_bytes: number | null; received_bytes: number };
      let pull = await t.client.post<Pull>('/models/pulls', { body: { repo: 'tunelab-test/Tiny-Qwen3', name: 'pulled-over-api' } });
      expect(pull.status).toBe('running');
      const twice = await t.client.post('/models/pulls', { body: { repo: 'tunelab-test/Tiny-Qwen3@main' } }).catch((error: unknown) => error);
      expect(twice).toMatchObject({ status: 409, param: 'repo' });
      while (pull.status === 'running') {
        await new Promise((resolve) => setTimeout(resolve, 200));
        pull = await t.client.get<Pull>(`/models/pulls/${pull.id}`);
      }
      expect(pull).toMatchObject({ status: 'succeeded', model: 'pulled-over-api', error: null });
      expect(pull.received_bytes).toBe(pull.total_bytes);

      const model = (await t.client.models.retrieve('pulled-over-api')) as unknown as { details: Record<string, unknown> };
      expect(model.details).toMatchObject({ model_type: 'qwen3', context_length: 2048, dtype: 'float32', loaded: true });
      expect((model.details.memory_bytes as { serve: number }).serve).toBeGreaterThan(0);

      const failed = await t.client.post<Pull>('/models/pulls', { body: { repo: 'tunelab-test/gpt2-like' } });
      let gpt2 = failed;
      while (gpt2.status === 'running') {
        await new Promise((resolve) => setTimeout(resolve, 100));
        gpt2 = await t.client.get<Pull>(`/models/pulls/${failed.id}`);
      }
      expect(gpt2.error?.message).toContain('tunelab trains llama, mistral, qwen2, qwen3');

      const stranger = t.clientFor((await t.server.services.orgs.createKey('stranger-corp')).key);
      const refused = await stranger.post('/models/pulls', { body: { repo: 'tunelab-test/Tiny-Qwen3' } }).catch((error: unknown) => error);
      expect(refused).toMatchObject({ status: 403 });
      expect((refused as Error).message).toContain('Organization "stranger-corp" may not add base models');
    } finally {
      await t.cleanup();
      for (const [key, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });
});
