import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

/**
 * A Hugging Face Hub on loopback, speaking the endpoints both official clients use:
 * `/api/models/{repo}/revision/{rev}` (info and commit), `/api/models/{repo}/tree/{rev}` (files with
 * sizes and oids), and `/{repo}/resolve/{rev}/{file}` with `x-repo-commit`, ETags, `x-linked-*`
 * headers and, for LFS files, a redirect to a content address that serves byte ranges.
 */
export interface HubFile {
  /** Where the bytes are on disk: served as a stream, so a 500 MB model costs no memory. */
  source: string;
  size: number;
  /** sha256 for LFS files, the git blob id for the others: what the hub's tree calls them. */
  oid: string;
  lfs: boolean;
}

export interface HubRepo {
  id: string;
  commit: string;
  files: Map<string, HubFile>;
  /** Its files answer 401 without a token, 403 with a token other than `token`. */
  gated?: { token: string };
}

export interface HubRequest {
  method: string;
  path: string;
  range: string | undefined;
}

export interface LoopbackHub {
  url: string;
  requests: HubRequest[];
  /** The next download of this file stops after `bytes` (the connection is cut), once. */
  cutOnce(file: string, bytes: number): void;
  /** Downloads of this file have one byte changed. */
  corrupt(file: string | null): void;
  close(): Promise<void>;
}

/** A repository made of the files of a local folder; safetensors are LFS files, as on the hub. */
export function repoFromFolder(id: string, folder: string, options: { gated?: { token: string } } = {}): HubRepo {
  const files = new Map<string, HubFile>();
  for (const name of fs.readdirSync(folder).sort()) {
    const source = path.join(folder, name);
    if (!fs.statSync(source).isFile()) continue;
    const lfs = name.endsWith('.safetensors');
    const data = fs.readFileSync(source);
    const oid = lfs
      ? createHash('sha256').update(data).digest('hex')
      : createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    files.set(name, { source, size: data.length, oid, lfs });
  }
  return { id, commit: randomBytes(20).toString('hex'), files, gated: options.gated };
}

export async function startHub(repos: HubRepo[]): Promise<LoopbackHub> {
  const byId = new Map(repos.map((repo) => [repo.id, repo]));
  const requests: HubRequest[] = [];
  const cuts = new Map<string, number>();
  let corrupted: string | null = null;

  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  /**
   * True when the refusal has been sent. A gated repository's metadata (info, file list) is
   * public, as on the hub; its files answer 401 without a token and 403 with one not allowed in.
   */
  const refused = (req: http.IncomingMessage, res: http.ServerResponse, repo: HubRepo | undefined, what = { metadata: false }): boolean => {
    if (!repo) {
      json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
      return true;
    }
    if (!repo.gated || what.metadata) return false;
    const token = req.headers.authorization?.replace(/^Bearer\s+/i, '');
    if (!token) {
      json(res, 401, { error: `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.` }, { 'x-error-code': 'GatedRepo' });
      return true;
    }
    if (token !== repo.gated.token) {
      json(res, 403, { error: `Access to model ${repo.id} is restricted and you are not in the authorized list.` }, { 'x-error-code': 'GatedRepo' });
      return true;
    }
    return false;
  };

  const sendFile = (req: http.IncomingMessage, res: http.ServerResponse, name: string, file: HubFile, headers: Record<string, string>) => {
    const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = match ? Number(match[1]) : 0;
    const end = match && match[2] ? Math.min(Number(match[2]), file.size - 1) : file.size - 1;
    if (start > end && file.size > 0) {
      res.writeHead(416, { 'content-range': `bytes */${file.size}` });
      return res.end();
    }
    res.writeHead(match ? 206 : 200, {
      ...headers,
      'accept-ranges': 'bytes',
      'content-length': String(end - start + 1),
      ...(match && { 'content-range': `bytes ${start}-${end}/${file.size}` }),
    });
    if (req.method === 'HEAD') return res.end();
    const cut = cuts.get(name);
    const last = cut !== undefined && start + cut <= end ? start + cut - 1 : end;
    if (cut !== undefined && last < end) cuts.delete(name);
    const stream = fs.createReadStream(file.source, { start, end: last, highWaterMark: 1 << 20 });
    let offset = start;
    stream.on('data', (chunk) => {
      const bytes = chunk as Buffer;
      // The 100th byte of the file flips, wherever the range starts.
      if (corrupted === name && offset <= 100 && 100 < offset + bytes.length) bytes[100 - offset]! ^= 0xff;
      offset += bytes.length;
      if (!res.write(bytes)) {
        stream.pause();
        res.once('drain', () => stream.resume());
      }
    });
    // A cut ends the socket, which sends what was written first; destroy() would drop it.
    stream.on('end', () => (last < end ? res.socket?.end() : res.end()));
  };

  let cdnUrl = '';
  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://hub');
    const route = decodeURIComponent(url.pathname);
    requests.push({ method: req.method ?? 'GET', path: route, range: req.headers.range });

    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(route);
    if (m) {
      const repo = byId.get(m[1]!);
      if (refused(req, res, repo, { metadata: true })) return;
      if (m[2] !== 'main' && m[2] !== repo!.commit) return json(res, 404, { error: `Invalid rev id: ${m[2]}` }, { 'x-error-code': 'RevisionNotFound' });
      return json(res, 200, {
        _id: repo!.commit.slice(0, 24),
        id: repo!.id,
        modelId: repo!.id,
        sha: repo!.commit,
        private: false,
        gated: repo!.gated ? 'manual' : false,
        disabled: false,
        downloads: 0,
        likes: 0,
        lastModified: '2026-01-01T00:00:00.000Z',
        pipeline_tag: 'text-generation',
        tags: [],
        siblings: [...repo!.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(route);
    if (m) {
      const repo = byId.get(m[1]!);
      if (refused(req, res, repo, { metadata: true })) return;
      return json(
        res,
        200,
        [...repo!.files].map(([name, file]) => ({
          type: 'file',
          path: name,
          size: file.size,
          oid: file.lfs ? createHash('sha1').update(name).digest('hex') : file.oid,
          ...(file.lfs && { lfs: { oid: file.oid, size: file.size, pointerSize: 134 } }),
        })),
      );
    }
    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(route);
    if (m) {
      const repo = byId.get(m[1]!);
      if (refused(req, res, repo)) return;
      if (m[2] !== 'main' && m[2] !== repo!.commit) return json(res, 404, { error: 'Revision not found' }, { 'x-error-code': 'RevisionNotFound' });
      const file = repo!.files.get(m[3]!);
      if (!file) return json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' });
      const common = { 'x-repo-commit': repo!.commit };
      if (file.lfs) {
        res.writeHead(302, {
          ...common,
          // To another host, as the hub's CDN links are: the clients read the file's metadata off this response.
          location: `${cdnUrl}/cdn/${repo!.id}/${m[3]}?sha256=${file.oid}`,
          'x-linked-etag': `"${file.oid}"`,
          'x-linked-size': String(file.size),
        });
        return res.end();
      }
      return sendFile(req, res, m[3]!, file, { ...common, etag: `"${file.oid}"`, 'content-type': 'application/octet-stream' });
    }
    m = /^\/cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(route);
    if (m) {
      const file = byId.get(m[1]!)?.files.get(m[2]!);
      if (!file) return json(res, 404, { error: 'no such object' });
      return sendFile(req, res, m[2]!, file, { etag: `"${file.oid}"`, 'content-type': 'application/octet-stream' });
    }
    json(res, 404, { error: `no route ${route}` });
  };
  const listen = async (host: string) => {
    const server = http.createServer(handle);
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    return { server, url: `http://${host}:${(server.address() as AddressInfo).port}` };
  };
  const hub = await listen('127.0.0.1');
  // The content host is another loopback address: Linux answers on all of 127.0.0.0/8.
  const cdn = await listen('127.0.0.2');
  cdnUrl = cdn.url;
  const close = (server: http.Server) =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return {
    url: hub.url,
    requests,
    cutOnce: (file, bytes) => cuts.set(file, bytes),
    corrupt: (file) => (corrupted = file),
    close: async () => {
      await Promise.all([close(hub.server), close(cdn.server)]);
    },
  };
}
