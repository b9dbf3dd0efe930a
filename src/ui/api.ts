import type { ChatCompletionChunk, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import type { FileObject } from 'openai/resources/files';
import type { FineTuningJobCheckpoint } from 'openai/resources/fine-tuning/jobs/checkpoints';
import type { FineTuningJobEvent } from 'openai/resources/fine-tuning/jobs/jobs';
import type { Model, ModelDeleted } from 'openai/resources/models';
import type { FineTuningJob } from '../jobs/jobs.js';
import type { MonthUsage } from '../usage/usage.js';
import type { WorkerInfo } from '../jobs/workers.js';
import type { OrganizationInfo } from '../orgs/orgs.js';

export type { ChatCompletionChunk, FileObject, FineTuningJob, FineTuningJobCheckpoint, FineTuningJobEvent, Model, ModelDeleted, MonthUsage, OrganizationInfo, WorkerInfo };

/** The dashboard talks to the same /v1 API as the SDK, on the server that serves it. */
const BASE = new URL('../v1', location.href).pathname;
const KEY_STORAGE = 'tunelab.apiKey';

/** A refusal with the server's own words (its OpenAI-style `error.message`) and status; 0 when no answer came. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface List<T> {
  object: 'list';
  data: T[];
  has_more?: boolean;
}

export const apiKey = {
  get: (): string | null => localStorage.getItem(KEY_STORAGE),
  set: (key: string) => localStorage.setItem(KEY_STORAGE, key),
  clear: () => localStorage.removeItem(KEY_STORAGE),
};

/** Listeners told when the server refuses the key, so the app can ask for another. */
const signedOut = new Set<() => void>();
export function onSignedOut(listener: () => void): () => void {
  signedOut.add(listener);
  return () => signedOut.delete(listener);
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${apiKey.get() ?? ''}`, ...extra };
}

async function failure(response: Response): Promise<ApiError> {
  const body = (await response.json().catch(() => null)) as { error?: { message?: string } } | null;
  if (response.status === 401) signedOut.forEach((listener) => listener());
  return new ApiError(response.status, body?.error?.message ?? `${response.status} ${response.statusText}`);
}

type Query = Record<string, string | number | undefined>;

function url(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, String(value));
  const search = params.toString();
  return `${BASE}${path}${search ? `?${search}` : ''}`;
}

export async function request<T>(method: string, path: string, options: { query?: Query; body?: unknown; signal?: AbortSignal } = {}): Promise<T> {
  const response = await fetch(url(path, options.query), {
    method,
    headers: headers(options.body === undefined ? {} : { 'content-type': 'application/json' }),
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: options.signal,
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export const get = <T>(path: string, query?: Query, signal?: AbortSignal) => request<T>('GET', path, { query, signal });
export const post = <T>(path: string, body?: unknown) => request<T>('POST', path, { body });
export const del = <T>(path: string) => request<T>('DELETE', path);

/**
 * Every item of a cursor-paged list (jobs, events, checkpoints), newest first as the API gives
 * them; or, with `enough`, the pages up to the first it accepts.
 */
export async function listAll<T extends { id: string }>(
  path: string,
  query: Query = {},
  signal?: AbortSignal,
  enough: (page: T[]) => boolean = () => false,
): Promise<T[]> {
  const items: T[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await get<List<T>>(path, { ...query, limit: 100, after }, signal);
    items.push(...page.data);
    if (!page.has_more || page.data.length === 0 || enough(page.data)) return items;
    after = page.data.at(-1)!.id;
  }
}

/** Checks a key before keeping it: the models list is the cheapest call every key may make. */
export async function signIn(key: string): Promise<void> {
  const response = await fetch(url('/models'), { headers: { authorization: `Bearer ${key}` } });
  if (!response.ok) throw await failure(response);
  apiKey.set(key);
}

/**
 * Uploads a file as the SDK does (multipart, purpose `fine-tune`). XMLHttpRequest rather than
 * fetch: only it reports the request body's progress.
 */
export function uploadFile(file: File, onProgress: (sent: number, total: number) => void, signal?: AbortSignal): Promise<FileObject> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    signal?.addEventListener('abort', () => xhr.abort());
    // The server stores an upload whole or not at all: one cut off here leaves nothing behind.
    xhr.onabort = () => reject(new ApiError(0, `The upload of ${file.name} was cancelled; nothing was stored.`));
    xhr.open('POST', url('/files'));
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress(event.loaded, event.total);
    xhr.onload = () => {
      const response = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText) as FileObject);
      else failure(response).then(reject, reject);
    };
    xhr.onerror = () => reject(new ApiError(0, 'The upload was cut off: the server could not be reached.'));
    const form = new FormData();
    form.append('purpose', 'fine-tune');
    form.append('file', file);
    xhr.send(form);
  });
}

/** A file's content needs the key in a header, which a plain link cannot send: fetched, then saved from a blob. */
export function downloadFile(file: FileObject): Promise<void> {
  return download(`/files/${encodeURIComponent(file.id)}/content`, file.filename);
}

/** Fetches an API path with the key and hands the body to the browser as a file download. */
export async function download(path: string, filename: string): Promise<void> {
  const response = await fetch(url(path), { headers: headers() });
  if (!response.ok) throw await failure(response);
  const blobUrl = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = blobUrl;
  link.download = filename;
  link.click();
  // The browser reads the blob after the click returns; a minute is plenty before letting it go.
  setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
}

/** A streamed chat completion: the chunks as the server sends them over server-sent events. */
export async function* streamChat(
  body: Omit<ChatCompletionCreateParamsStreaming, 'stream'>,
  signal: AbortSignal,
): AsyncGenerator<ChatCompletionChunk> {
  const response = await fetch(url('/chat/completions'), {
    method: 'POST',
    headers: headers({ 'content-type': 'application/json' }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok || !response.body) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      // The server always ends with [DONE]: a stream that ends before it was cut off on the way.
      if (done) throw new ApiError(0, 'The answer was cut off: the connection closed before it was complete.');
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const data = buffer
          .slice(0, end)
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n');
        buffer = buffer.slice(end + 2);
        if (data === '[DONE]') return;
        if (!data) continue;
        const event = JSON.parse(data) as ChatCompletionChunk | { error: { message: string } };
        if ('error' in event) throw new ApiError(500, event.error.message);
        yield event;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
