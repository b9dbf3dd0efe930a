import fs from 'node:fs';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PRICES, trainingCost } from '../src/datasets/stats.js';
import type { MonthUsage } from '../src/usage/usage.js';
import { runCli } from './support/cli.js';
import { eventually, finishJob } from './support/finish.js';
import { type TestServer, onPostgres, startTestServer, tempHome } from './support/server.js';

const home = tempHome();
const servers: TestServer[] = [];
const start = async () => {
  const server = await startTestServer({ home });
  servers.push(server);
  return server;
};
afterAll(async () => {
  for (const s of servers) await s.stop();
  fs.rmSync(home, { recursive: true, force: true });
});

const usage = async (client: OpenAI, month?: string) =>
  client.get<{ object: string; data: MonthUsage[] }>('/usage', month ? { query: { month } } : {});

/** A month's totals with training only: `costs` are the jobs' own costs, summed as the server sums them. */
const trainingMonth = (month: string, tokens: number[]): MonthUsage => {
  const cost = tokens.reduce((sum, n) => sum + Math.round(trainingCost(n, DEFAULT_PRICES) * 1e6), 0) / 1e6;
  return {
    object: 'usage.month',
    month,
    training_jobs: tokens.length,
    training_tokens: tokens.reduce((a, b) => a + b, 0),
    training_cost: cost,
    inference_input_tokens: 0,
    inference_output_tokens: 0,
    inference_cost: 0,
    total_cost: cost,
  };
};

const zeroMonth = (month: string): MonthUsage => ({ ...trainingMonth(month, []), training_jobs: 0 });

describe('usage', () => {
  let t: TestServer;
  let acme: OpenAI;
  const expected = [trainingMonth('2026-04', [40_000]), trainingMonth('2026-03', [1_000, 2_500])];
  const jobIds: string[] = [];

  beforeAll(async () => {
    t = await start();
    acme = t.clientFor((await t.server.services.orgs.createKey('acme')).key);
    // Finished on both sides of a month's end (UTC); failed and cancelled jobs are not charged.
    for (const [how, at, trainedTokens] of [
      ['succeeded', '2026-03-15T12:00:00Z', 1_000],
      ['succeeded', '2026-03-31T23:59:59Z', 2_500],
      ['succeeded', '2026-04-01T00:00:00Z', 40_000],
      ['failed', '2026-04-02T00:00:00Z', undefined],
      ['cancelled', '2026-04-02T00:00:00Z', undefined],
    ] as const) {
      jobIds.push((await finishJob(t, how, { at, trainedTokens })).id);
    }
    await finishJob(t, 'succeeded', { client: acme, at: '2026-04-03T00:00:00Z', trainedTokens: 7_777 });
  });

  it("sums a row per succeeded job's trained tokens per month, newest first, for the caller's organization only", async () => {
    const list = await eventually(async () => {
      const answer = await usage(t.client);
      return answer.data.reduce((n, m) => n + m.training_jobs, 0) === 3 ? answer : undefined;
    });
    expect(list).toEqual({ object: 'list', data: expected });
    expect(expected[1]!.training_cost).toBe(0.028);
    expect(await usage(t.client, '2026-03')).toEqual({ object: 'list', data: [expected[1]] });
    expect(await usage(t.client, '2025-12')).toEqual({ object: 'list', data: [zeroMonth('2025-12')] });
    expect(
      await eventually(async () => {
        const answer = await usage(acme);
        return answer.data.length ? answer : undefined;
      }),
    ).toEqual({ object: 'list', data: [trainingMonth('2026-04', [7_777])] });
  });

  it('refuses a month not written YYYY-MM', async () => {
    const refused = await usage(t.client, '2026-13').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
    expect((refused as InstanceType<typeof OpenAI.BadRequestError>).error).toMatchObject({
      param: 'month',
      message: "Invalid 'month': must be a month written YYYY-MM",
    });
  });

  it('prints a table per month with `tunelab usage`', async () => {
    const { OPENAI_API_KEY: _k, OPENAI_BASE_URL: _u, TUNELAB_API_KEY: _t, TUNELAB_BASE_URL: _b, ...env } = process.env;
    const printed = await runCli(['usage', '--home', t.home], { env });
    expect(printed).toMatchObject({ code: 0, stderr: '' });
    expect(printed.stdout.split('\n')).toEqual([
      expect.stringMatching(/^MONTH\s+JOBS\s+TRAINING_TOKENS\s+TRAINING_COST\s+INFERENCE_TOKENS\s+INFERENCE_COST\s+TOTAL_COST$/),
      expect.stringMatching(/^2026-04\s+1\s+40000\s+\$0\.3200\s+0\s+\$0\.0000\s+\$0\.3200$/),
      expect.stringMatching(/^2026-03\s+2\s+3500\s+\$0\.0280\s+0\s+\$0\.0000\s+\$0\.0280$/),
      '',
    ]);
    const one = await runCli(['usage', '--month', '2026-03', '--json', '--home', t.home], { env });
    expect(JSON.parse(one.stdout)).toEqual([expected[1]]);
  });

  it('counts each job once across restarts, and records on start what a crash left unrecorded', async () => {
    await t.stop();
    if (!onPostgres) {
      // As if the process had died between the job's move and its usage row.
      const database = new SqliteDatabase(path.join(home, 'tunelab.db'));
      expect(database.prepare('delete from usage_records where source_id = ?').run(jobIds[2]).changes).toBe(1);
      database.close();
    }
    t = await start();
    expect(await usage(t.client)).toEqual({ object: 'list', data: expected });
    await t.stop();
    t = await start();
    expect(await usage(t.client)).toEqual({ object: 'list', data: expected });
  });
});
