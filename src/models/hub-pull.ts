import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  HubApiError,
  downloadFile,
  fileDownloadInfo,
  getHFHubCachePath,
  getRepoFolderName,
  listFiles,
  modelInfo,
  type ListFileEntry,
} from '@huggingface/hub';
import { ServiceError, invalidRequest } from '../errors.js';
import { SUPPORTED_MODEL_TYPES, isSupportedModelType } from './base-models.js';
import { indexedShards } from './model-facts.js';

/**
 * Pulls a model repository from the Hugging Face Hub into the standard Hugging Face cache
 * (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`): `refs/<revision>` names
 * the commit, `snapshots/<commit>/<file>` links to `blobs/<etag>`, exactly as transformers and vLLM
 * lay it out, so a model already downloaded by either is found and not fetched again.
 *
 * Metadata, cache paths and the file transfer itself (plain HTTP or Xet) come from the official
 * client `@huggingface/hub`. Its `downloadFileToCacheDir` is not used: it restarts an interrupted
 * file from zero, checks neither size nor hash, reports no progress and asks the hub about each file
 * again; the loop below does those four things around the library's `downloadFile`.
 */

/** The files tunelab reads from a model repository; weights are added from the index. */
const NEEDED_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'model.safetensors.index.json',
  'model.safetensors',
];

export interface HubSettings {
  endpoint: string;
  token: string | undefined;
  offline: boolean;
  cacheDir: string;
}

/** The variables huggingface_hub reads, read the same way. */
export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  const tokenFile = env.HF_TOKEN_PATH ?? path.join(hfHome, 'token');
  const savedToken = fs.existsSync(tokenFile) ? fs.readFileSync(tokenFile, 'utf8').trim() || undefined : undefined;
  return {
    endpoint: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token: env.HF_TOKEN || savedToken,
    offline: /^(1|on|yes|true)$/i.test(env.HF_HUB_OFFLINE ?? ''),
    cacheDir: getHFHubCachePath(),
  };
}

export interface PullProgress {
  /** Bytes received so far in this pull, over every file. */
  receivedBytes: number;
  /** Bytes this pull has to receive (files already in the cache are not counted). */
  totalBytes: number;
  file: string;
}

export interface PullResult {
  repo: string;
  commit: string;
  /** The snapshot folder: what the engine loads and `tunelab models add` links to. */
  folder: string;
  files: string[];
  /** Bytes fetched now; 0 when everything came from the cache. */
  downloadedBytes: number;
}

export interface PullOptions {
  revision?: string;
  settings?: HubSettings;
  onProgress?: (progress: PullProgress) => void;
  /** Called once the file list is known, with the bytes still to fetch. */
  onPlan?: (plan: { totalBytes: number; files: number }) => void;
}

/** `owner/name[@revision]` as typed on the command line. */
export function parseRepoReference(reference: string): { repo: string; revision: string } {
  const match = /^([A-Za-z0-9][\w.-]*\/[\w.-]+)(?:@([\w./-]+))?$/.exec(reference.trim());
  if (!match) throw invalidRequest(`"${reference}" is not a Hugging Face model id: expected owner/name or owner/name@revision.`, 'repo');
  return { repo: match[1]!, revision: match[2] ?? 'main' };
}

export async function pullModel(repo: string, options: PullOptions = {}): Promise<PullResult> {
  const settings = options.settings ?? hubSettings();
  const revision = options.revision ?? 'main';
  const storage = path.join(settings.cacheDir, getRepoFolderName({ type: 'model', name: repo }));
  if (settings.offline) return fromCache(repo, revision, storage);

  const hub = { hubUrl: settings.endpoint, accessToken: settings.token };
  const commit = await asked(repo, settings, async () => {
    const info = await modelInfo({ ...hub, name: repo, revision, additionalFields: ['sha'] });
    return info.sha;
  });
  if (revision !== commit) {
    await fsp.mkdir(path.join(storage, 'refs', path.dirname(revision)), { recursive: true });
    await fsp.writeFile(path.join(storage, 'refs', revision), commit);
  }
  const entries = new Map<string, ListFileEntry>();
  await asked(repo, settings, async () => {
    for await (const entry of listFiles({ ...hub, repo: { type: 'model', name: repo }, revision: commit, recursive: true })) {
      if (entry.type === 'file') entries.set(entry.path, entry);
    }
  });

  const snapshot = path.join(storage, 'snapshots', commit);
  const fetcher = new CacheWriter(repo, commit, storage, settings, options.onProgress);
  const metadata = NEEDED_FILES.filter((file) => file.endsWith('.json') || file.endsWith('.jinja')).filter((file) => entries.has(file));
  if (!entries.has('config.json')) throw invalidRequest(`${repo}@${revision} has no config.json: it is not a transformers model.`, 'repo');
  // The architecture decides before anything large is fetched.
  await fetcher.fetch([entries.get('config.json')!]);
  checkArchitecture(repo, path.join(snapshot, 'config.json'));
  await fetcher.fetch(metadata.filter((file) => file !== 'config.json').map((file) => entries.get(file)!));
  if (!entries.has('tokenizer.json')) {
    throw invalidRequest(`${repo}@${revision} has no tokenizer.json (the fast tokenizer file tunelab reads).`, 'repo');
  }

  const weights = weightFiles(snapshot, entries);
  if (weights.length === 0) {
    throw invalidRequest(`${repo}@${revision} has no weights in safetensors (model.safetensors or model.safetensors.index.json).`, 'repo');
  }
  const weightEntries = weights.map((file) => {
    const entry = entries.get(file);
    if (!entry) throw invalidRequest(`${repo}@${revision}: model.safetensors.index.json names ${file}, which the repository lacks.`, 'repo');
    return entry;
  });
  const missing = weightEntries.filter((entry) => !fetcher.cached(entry));
  const totalBytes = missing.reduce((sum, entry) => sum + entry.size, 0);
  options.onPlan?.({ totalBytes, files: missing.length });
  fetcher.resetProgress(totalBytes);
  await fetcher.fetch(weightEntries);

  return { repo, commit, folder: snapshot, files: [...metadata, ...weights], downloadedBytes: fetcher.downloadedBytes };
}

/** With `HF_HUB_OFFLINE`: what the cache has for `revision`, or why it cannot be used. */
function fromCache(repo: string, revision: string, storage: string): PullResult {
  const refFile = path.join(storage, 'refs', revision);
  const commit = /^[0-9a-f]{40}$/.test(revision) ? revision : fs.existsSync(refFile) ? fs.readFileSync(refFile, 'utf8').trim() : null;
  const notCached = (what: string) =>
    invalidRequest(`HF_HUB_OFFLINE is set and ${repo}@${revision} is not in the Hugging Face cache (${storage}): ${what}. Pull it once online.`, 'repo');
  if (!commit) throw notCached(`no refs/${revision}`);
  const snapshot = path.join(storage, 'snapshots', commit);
  const present = (file: string) => fs.existsSync(path.join(snapshot, file));
  for (const file of ['config.json', 'tokenizer.json']) if (!present(file)) throw notCached(`${file} is missing`);
  checkArchitecture(repo, path.join(snapshot, 'config.json'));
  const weights = weightFiles(snapshot, null);
  const absent = weights.filter((file) => !present(file));
  if (weights.length === 0 || absent.length > 0) throw notCached(`weights missing (${absent.join(', ') || 'model.safetensors'})`);
  const files = [...NEEDED_FILES.filter((file) => !file.endsWith('.safetensors') && present(file)), ...weights];
  return { repo, commit, folder: snapshot, files, downloadedBytes: 0 };
}

/** The safetensors files the model consists of: the index's shards, or the single file. */
function weightFiles(snapshot: string, entries: Map<string, ListFileEntry> | null): string[] {
  const single = entries ? entries.has('model.safetensors') : fs.existsSync(path.join(snapshot, 'model.safetensors'));
  return indexedShards(snapshot) ?? (single ? ['model.safetensors'] : []);
}

function checkArchitecture(repo: string, configFile: string): void {
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { model_type?: unknown };
  if (!isSupportedModelType(config.model_type)) {
    throw invalidRequest(
      `${repo} is a ${JSON.stringify(config.model_type)} model (config.json model_type); tunelab trains ${SUPPORTED_MODEL_TYPES.join(', ')}. Nothing more was downloaded.`,
      'repo',
      'unsupported_model',
    );
  }
}

/** Turns the hub's refusals into messages that say what to do. */
async function asked<T>(repo: string, settings: HubSettings, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw explained(repo, settings, error);
  }
}

function explained(repo: string, settings: HubSettings, error: unknown): unknown {
  if (!(error instanceof HubApiError)) {
    const cause = (error as { cause?: { code?: string } }).cause?.code;
    if (error instanceof TypeError && cause) {
      return new ServiceError('unavailable', `Cannot reach ${settings.endpoint} (${cause}). Set HF_ENDPOINT for a mirror, or HF_HUB_OFFLINE=1 to use the cache only.`, { param: 'repo' });
    }
    return error;
  }
  const page = `${settings.endpoint}/${repo}`;
  if (error.statusCode === 401 || error.statusCode === 403) {
    const token = settings.token
      ? `the token in HF_TOKEN was refused for it (${error.statusCode}): check that its account has accepted the licence and that it may read gated repositories`
      : 'then set HF_TOKEN to an access token of that account (' + `${settings.endpoint}/settings/tokens)`;
    return new ServiceError('permission', `${repo} is gated or private. Accept its licence at ${page} while signed in; ${token}.`, {
      param: 'repo',
      code: 'gated_repository',
    });
  }
  if (error.statusCode === 404) {
    return new ServiceError('not_found', `${repo} (or that revision) does not exist on ${settings.endpoint}, or it is private: ${page}`, {
      param: 'repo',
      code: 'model_not_found',
    });
  }
  return new ServiceError('unavailable', `${settings.endpoint} answered ${error.statusCode} for ${repo}: ${error.message}`, { param: 'repo' });
}

/** Puts files of one commit into the cache, each resumed where a previous try stopped and checked on arrival. */
class CacheWriter {
  downloadedBytes = 0;
  private received = 0;
  private total = 0;

  constructor(
    private readonly repo: string,
    private readonly commit: string,
    private readonly storage: string,
    private readonly settings: HubSettings,
    private readonly onProgress: ((progress: PullProgress) => void) | undefined,
  ) {}

  resetProgress(totalBytes: number): void {
    this.received = 0;
    this.total = totalBytes;
  }

  private pointer(entry: ListFileEntry): string {
    return path.join(this.storage, 'snapshots', this.commit, entry.path);
  }

  /** True when the snapshot already has the file at its size: no request is made for it. */
  cached(entry: ListFileEntry): boolean {
    try {
      return fs.statSync(this.pointer(entry)).size === entry.size;
    } catch {
      return false;
    }
  }

  async fetch(entries: ListFileEntry[]): Promise<void> {
    for (const entry of entries) {
      if (this.cached(entry)) continue;
      const etag = entry.lfs?.oid ?? entry.oid;
      if (!etag) throw new Error(`The hub gave no oid for ${entry.path}`);
      const blob = path.join(this.storage, 'blobs', etag);
      if (!fs.existsSync(blob) || fs.statSync(blob).size !== entry.size) await this.download(entry, blob);
      const pointer = this.pointer(entry);
      await fsp.mkdir(path.dirname(pointer), { recursive: true });
      await fsp.rm(pointer, { force: true });
      await fsp.symlink(path.relative(path.dirname(pointer), blob), pointer);
    }
  }

  private async download(entry: ListFileEntry, blob: string): Promise<void> {
    await fsp.mkdir(path.dirname(blob), { recursive: true });
    const partial = `${blob}.incomplete`;
    let offset = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
    if (offset > entry.size) {
      await fsp.rm(partial);
      offset = 0;
    }
    // LFS files are named by their sha256, the others by their git blob id: both are checked.
    const hash = entry.lfs ? createHash('sha256') : createHash('sha1').update(`blob ${entry.size}\0`);
    if (offset > 0) {
      for await (const chunk of fs.createReadStream(partial)) hash.update(chunk as Buffer);
      this.count(entry, offset);
    }
    if (offset < entry.size) {
      const hub = { hubUrl: this.settings.endpoint, accessToken: this.settings.token };
      const where = { ...hub, repo: { type: 'model' as const, name: this.repo }, path: entry.path, revision: this.commit };
      const file = await asked(this.repo, this.settings, async () => {
        const info = await fileDownloadInfo(where);
        if (!info) throw new HubApiError(`${this.settings.endpoint}/${this.repo}`, 404);
        return downloadFile({ ...where, downloadInfo: info });
      });
      if (!file) throw new Error(`The hub lost ${entry.path} between listing and download`);
      // Each chunk is on disk before the next is read, so a cut connection leaves all it delivered
      // for the next pull to resume from (a pipeline would drop the writes still queued).
      const body = (offset > 0 ? file.slice(offset) : file).stream();
      const out = await fsp.open(partial, 'a');
      try {
        for await (const chunk of body) {
          hash.update(chunk);
          this.downloadedBytes += chunk.length;
          this.count(entry, chunk.length);
          await out.write(chunk);
        }
      } finally {
        await out.close();
      }
    }
    const size = fs.statSync(partial).size;
    const digest = hash.digest('hex');
    const expected = entry.lfs?.oid ?? entry.oid;
    if (size !== entry.size || digest !== expected) {
      await fsp.rm(partial, { force: true });
      const what = size !== entry.size ? `${size} bytes, the hub says ${entry.size}` : `${entry.lfs ? 'sha256' : 'git blob id'} ${digest}, the hub says ${expected}`;
      throw new ServiceError('server', `${this.repo}: ${entry.path} arrived corrupted (${what}); the partial file was deleted, pull again.`, {
        code: 'corrupted_download',
      });
    }
    await fsp.rename(partial, blob);
  }

  private count(entry: ListFileEntry, bytes: number): void {
    this.received += bytes;
    this.onProgress?.({ receivedBytes: this.received, totalBytes: this.total, file: entry.path });
  }
}
