import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import pg from 'pg';
import { inject } from 'vitest';
import { BaseModelRegistry } from '../../src/models/base-models.js';
import { type RunningServer, type ServerOptions, startServer } from '../../src/server.js';
import { writeModelFolder } from './model-folder.js';

export const DATASETS = path.resolve(import.meta.dirname, '../../examples/data');
export const BASE_MODEL = 'tiny-qwen3';

export interface TestServer {
  server: RunningServer;
  /** The SDK, holding the key of the organization created on first start ("personal"). */
  client: OpenAI;
  /** That key. */
  apiKey: string;
  home: string;
  clientFor(key: string): OpenAI;
  /** Stops the server; the home folder stays until `cleanup`. */
  stop(): Promise<void>;
  cleanup(): Promise<void>;
}

export const tempHome = () => fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-test-'));

/** True in the `postgres` test project, where the store is a PostgreSQL database instead of the SQLite file. */
export const onPostgres = process.env.TUNELAB_TEST_DATABASE === 'postgres';

const databases = new Map<string, string>();

/** One fresh database per home folder, so a restarted server finds its own data again. */
export async function postgresFor(home: string): Promise<string> {
  let url = databases.get(home);
  if (!url) {
    const name = `tunelab_${path.basename(home).replace(/[^a-zA-Z0-9]/g, '_').toLowerCase()}`;
    const admin = new pg.Client({ connectionString: inject('postgresUrl') });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    url = inject('postgresUrl').replace(/\/postgres\?/, `/${name}?`);
    databases.set(home, url);
  }
  return url;
}

/** A real server on an ephemeral loopback port over a temporary home with one base model registered. */
export async function startTestServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  const home = options.home ?? tempHome();
  const database = onPostgres ? await postgresFor(home) : undefined;
  // No engine and no built-in model unless a test asks: most tests look at jobs as the API leaves them, not at training.
  const server = await startServer({ home, port: 0, database, engineSlots: 0, builtinModels: false, ...options });
  const registry = new BaseModelRegistry(server.home.models);
  if (!registry.get(BASE_MODEL)) registry.add(writeModelFolder(path.join(home, 'model-sources', BASE_MODEL)), BASE_MODEL);
  const clientFor = (apiKey: string) => new OpenAI({ baseURL: server.baseURL, apiKey, maxRetries: 0 });
  let stopped = false;
  const stop = async () => {
    if (!stopped) await server.close();
    stopped = true;
  };
  const apiKey = fs.readFileSync(path.join(home, 'api-key'), 'utf8').trim();
  return {
    server,
    home,
    client: clientFor(apiKey),
    apiKey,
    clientFor,
    stop,
    cleanup: async () => {
      await stop();
      fs.rmSync(home, { recursive: true, force: true });
    },
  };
}

/**
 * The SDK with its default retries (it retries a 5xx or a 409 unless the answer says not to), and
 * how many requests it has sent to the server: a test sees whether an error was retried.
 */
export function retryingClient(test: TestServer): { client: OpenAI; requests: () => number } {
  let requests = 0;
  const client = new OpenAI({
    baseURL: test.server.baseURL,
    apiKey: test.apiKey,
    maxRetries: 2,
    fetch: (url, init) => {
      if (String(url).startsWith(test.server.baseURL)) requests++;
      return fetch(url, init);
    },
  });
  return { client, requests: () => requests };
}

/** The job once the dataset doctor has run on its files (it runs in the background after create). */
export async function validated(client: OpenAI, jobId: string, timeoutMs = 30_000): Promise<OpenAI.FineTuning.FineTuningJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(jobId);
    if (job.status !== 'validating_files') return job;
    if (Date.now() > deadline) throw new Error(`${jobId} is still validating its files after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export const weatherJokes = () => fs.createReadStream(path.join(DATASETS, 'weather-jokes.jsonl'));

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

/** The job once it has succeeded, failed or been cancelled. */
export async function finished(client: OpenAI, jobId: string, timeoutMs = 120_000): Promise<OpenAI.FineTuning.FineTuningJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await client.fineTuning.jobs.retrieve(jobId);
    if (FINISHED.has(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`${jobId} is still ${job.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** All the job's events, oldest first, through the SDK's auto-pagination. */
export async function allEvents(client: OpenAI, jobId: string): Promise<OpenAI.FineTuning.Jobs.FineTuningJobEvent[]> {
  const events = [];
  for await (const event of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) events.push(event);
  return events.reverse();
}

/** The steps of the job's metrics events, oldest first. */
export async function metricsSteps(client: OpenAI, jobId: string): Promise<number[]> {
  return (await allEvents(client, jobId)).filter((e) => e.type === 'metrics').map((e) => (e.data as { step: number }).step);
}

/** Waits until the job has recorded at least `step` steps. */
export async function untilStep(client: OpenAI, jobId: string, step: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [latest] = (await client.fineTuning.jobs.listEvents(jobId, { limit: 5 })).data.filter((e) => e.type === 'metrics');
    if (latest && (latest.data as { step: number }).step >= step) return;
    if (Date.now() > deadline) throw new Error(`${jobId} has not reached step ${step} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
