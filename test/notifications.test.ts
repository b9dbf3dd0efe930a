import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import OpenAI from 'openai';
import { SMTPServer } from 'smtp-server';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FineTuningJob } from '../src/jobs/jobs.js';
import { runCli } from './support/cli.js';
import { ENGINE_ERROR, type Finish, eventually, finishJob } from './support/finish.js';
import { BASE_MODEL, type TestServer, onPostgres, startTestServer, tempHome } from './support/server.js';

interface Received {
  headers: Record<string, string>;
  body: string;
  at: number;
}

/**
 * An HTTP server on loopback standing in for a customer's webhook receiver. `answers` are the
 * statuses of the next requests (0: never answer), then 200.
 */
async function receiver(answers: number[] = []) {
  const received: Received[] = [];
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
      received.push({ headers, body, at: Date.now() });
      const status = answers.shift() ?? 200;
      if (status === 0) return void hanging.push(response);
      response.statusCode = status;
      response.end(status < 300 ? 'ok' : 'not now');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/tunelab`,
    received,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Standard Webhooks verification, written out: HMAC-SHA256 of "id.timestamp.body" keyed by the decoded secret. */
function signatureIsValid(secret: string, { headers, body }: Received): boolean {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`).digest('base64');
  return headers['webhook-signature']!.split(' ').includes(`v1,${expected}`);
}

const orgIdOf = async (t: TestServer) => (await t.server.services.orgs.authenticate(t.client.apiKey!)).id;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('webhooks', () => {
  let t: TestServer;
  let orgId: string;
  const cleanups: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    t = await startTestServer({ notifications: { retryDelaysMs: [150, 300], timeoutMs: 1000 } });
    orgId = await orgIdOf(t);
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  afterAll(() => t.cleanup());

  /** A receiver registered as an endpoint of the organization, removed after the test. */
  async function endpoint(answers: number[] = [], org = orgId) {
    const hook = await receiver(answers);
    const registered = await t.server.services.notifications.addEndpoint(org, hook.url);
    cleanups.push(async () => {
      await t.server.services.notifications.removeEndpoint(org, registered.id);
      await hook.close();
    });
    return { ...hook, ...registered };
  }

  it('sends fine_tuning.job.succeeded, failed and cancelled events, signed per Standard Webhooks, shaped as OpenAI sends them', async () => {
    const hook = await endpoint();
    expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const acme = await t.server.services.orgs.createKey('acme');
    const acmeHook = await endpoint([], acme.organization.id);

    const jobs = new Map<string, FineTuningJob>();
    for (const how of ['succeeded', 'failed', 'cancelled'] satisfies Finish[]) {
      const job = await finishJob(t, how);
      expect(job.status).toBe(how);
      jobs.set(job.id, job);
    }
    await eventually(() => (hook.received.length >= 3 ? true : undefined));

    for (const request of hook.received) {
      expect(request.headers['content-type']).toBe('application/json');
      expect(request.headers['webhook-id']).toMatch(/^wh_[A-Za-z0-9]{24}$/);
      expect(Math.abs(Number(request.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
      expect(signatureIsValid(hook.secret, request)).toBe(true);
      // The official SDK's verifier accepts it, as it accepts OpenAI's own webhooks.
      const event = (await t.client.webhooks.unwrap(request.body, request.headers, hook.secret)) as unknown as Record<string, unknown>;
      const job = jobs.get((event.data as { id: string }).id)!;
      expect(event).toEqual({
        object: 'event',
        id: expect.stringMatching(/^evt_[A-Za-z0-9]{24}$/),
        type: `fine_tuning.job.${job.status}`,
        created_at: job.finished_at,
        data: { id: job.id },
      });
      await expect(t.client.webhooks.unwrap(request.body.replace(job.id, 'ftjob-forged'), request.headers, hook.secret)).rejects.toBeInstanceOf(
        OpenAI.InvalidWebhookSignatureError,
      );
    }
    expect(new Set(hook.received.map((r) => JSON.parse(r.body).data.id))).toEqual(new Set(jobs.keys()));

    // Once each, and nothing to another organization's endpoint.
    await sleep(400);
    expect(hook.received).toHaveLength(3);
    expect(acmeHook.received).toHaveLength(0);
    for (const id of jobs.keys()) {
      expect(await t.server.services.notifications.deliveries(id)).toMatchObject([
        { channel: 'webhook', endpoint_id: hook.id, target: hook.url, status: 'delivered', attempts: 1, last_error: null },
      ]);
    }
  });

  it('tries a failing receiver again after the backoff, with the same id and body, until it answers 2xx', async () => {
    const hook = await endpoint([500, 503]);
    const job = await finishJob(t, 'succeeded');
    await eventually(() => (hook.received.length >= 3 ? true : undefined));
    const [first, second, third] = hook.received as [Received, Received, Received];
    expect(new Set(hook.received.map((r) => r.headers['webhook-id'])).size).toBe(1);
    expect(new Set(hook.received.map((r) => r.body)).size).toBe(1);
    for (const request of hook.received) expect(signatureIsValid(hook.secret, request)).toBe(true);
    expect(second.at - first.at).toBeGreaterThanOrEqual(145);
    expect(third.at - second.at).toBeGreaterThanOrEqual(295);
    await sleep(400);
    expect(hook.received).toHaveLength(3);
    expect(await t.server.services.notifications.deliveries(job.id)).toMatchObject([{ status: 'delivered', attempts: 3, last_error: null }]);
  });

  it('gives up when the schedule runs out, and cuts off a receiver that does not answer', async () => {
    const refusing = await endpoint([500, 500, 500, 500]);
    const hanging = await endpoint([0]);
    const job = await finishJob(t, 'failed');
    await eventually(async () => {
      const deliveries = await t.server.services.notifications.deliveries(job.id);
      return deliveries.length === 2 && deliveries.every((d) => d.status !== 'pending') ? deliveries : undefined;
    });
    expect(await t.server.services.notifications.deliveries(job.id)).toMatchObject([
      { target: refusing.url, status: 'failed', attempts: 3, last_error: `HTTP 500 from ${refusing.url}` },
      { target: hanging.url, status: 'delivered', attempts: 2, last_error: null },
    ]);
    expect(refusing.received).toHaveLength(3);
    expect(hanging.received).toHaveLength(2);
    expect(hanging.received[1]!.at - hanging.received[0]!.at).toBeGreaterThanOrEqual(1000 + 145);
  });

  it('refuses URLs that are not http(s)', async () => {
    await expect(t.server.services.notifications.addEndpoint(orgId, 'ftp://example.com/hook')).rejects.toThrow(/must be http\(s\)/);
    await expect(t.server.services.notifications.addEndpoint(orgId, 'not a url')).rejects.toThrow(/Invalid webhook URL/);
  });
});

describe('webhooks across a restart', () => {
  const home = tempHome();
  const servers: TestServer[] = [];
  const start = async () => {
    const server = await startTestServer({ home, notifications: { retryDelaysMs: [1500], timeoutMs: 1000 } });
    servers.push(server);
    return server;
  };
  afterAll(async () => {
    for (const s of servers) await s.stop();
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('delivers an event whose first attempt failed once, after the restart, and enqueues it only once', async () => {
    const hook = await receiver([500]);
    const first = await start();
    const { secret } = await first.server.services.notifications.addEndpoint(await orgIdOf(first), hook.url);
    const job = await finishJob(first, 'succeeded');
    await eventually(() => (hook.received.length >= 1 ? true : undefined));
    await first.stop();

    const second = await start();
    await eventually(() => (hook.received.length >= 2 ? true : undefined));
    await sleep(300);
    expect(hook.received).toHaveLength(2);
    const [failed, delivered] = hook.received as [Received, Received];
    expect(delivered.headers['webhook-id']).toBe(failed.headers['webhook-id']);
    expect(delivered.body).toBe(failed.body);
    expect(delivered.at - failed.at).toBeGreaterThanOrEqual(1495);
    expect(signatureIsValid(secret, delivered)).toBe(true);
    expect(await second.server.services.notifications.deliveries(job.id)).toMatchObject([{ status: 'delivered', attempts: 2 }]);
    await second.stop();

    // A third start finds nothing left to send.
    const third = await start();
    await sleep(300);
    expect(hook.received).toHaveLength(2);
    expect(await third.server.services.notifications.deliveries(job.id)).toHaveLength(1);
    await third.stop();
    await hook.close();
  });

  it.skipIf(onPostgres)('announces on start a job that finished while its notification was not recorded (a crash in between)', async () => {
    const hook = await receiver();
    const fourth = await start();
    await fourth.server.services.notifications.addEndpoint(await orgIdOf(fourth), hook.url);
    const job = await finishJob(fourth, 'cancelled');
    await eventually(() => (hook.received.length >= 1 ? true : undefined));
    await fourth.stop();
    // As if the process had died after the move committed and before the enqueue did.
    const database = new SqliteDatabase(path.join(home, 'tunelab.db'));
    database.prepare('delete from notification_deliveries where job_id = ?').run(job.id);
    database.prepare('delete from job_notifications where job_id = ?').run(job.id);
    database.close();

    const fifth = await start();
    await eventually(() => (hook.received.length >= 2 ? true : undefined));
    expect(JSON.parse(hook.received[1]!.body)).toMatchObject({ type: 'fine_tuning.job.cancelled', data: { id: job.id } });
    await sleep(300);
    expect(hook.received).toHaveLength(2);
    await fifth.stop();
    await hook.close();
  });
});

interface Mail {
  from: string | undefined;
  to: string[];
  user: unknown;
  headers: string;
  text: string;
}

/** The plain text part of a message as nodemailer writes it (7bit or quoted-printable). */
function parseMail(raw: string): Pick<Mail, 'headers' | 'text'> {
  const split = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ');
  let text = raw.slice(split + 4);
  if (/content-transfer-encoding: quoted-printable/i.test(headers)) {
    text = Buffer.from(
      text.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16))),
      'latin1',
    ).toString('utf8');
  }
  return { headers, text: text.replace(/\r\n/g, '\n') };
}

describe('e-mail through SMTP', () => {
  let t: TestServer;
  let smtp: SMTPServer;
  const mails: Mail[] = [];
  beforeAll(async () => {
    smtp = new SMTPServer({
      disabledCommands: ['STARTTLS'],
      allowInsecureAuth: true,
      onAuth(auth, _session, callback) {
        if (auth.username === 'tunelab' && auth.password === 's3cret') callback(null, { user: auth.username });
        else callback(new Error('Invalid username or password'));
      },
      onData(stream, session, callback) {
        let raw = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => (raw += chunk));
        stream.on('end', () => {
          const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined;
          mails.push({ from, to: session.envelope.rcptTo.map((r) => r.address), user: session.user, ...parseMail(raw) });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
    const home = tempHome();
    const port = (smtp.server.address() as AddressInfo).port;
    const smtpConfig = { host: '127.0.0.1', port, secure: false, auth: { user: 'tunelab', pass: 's3cret' }, from: 'tunelab <tunelab@example.test>' };
    fs.writeFileSync(path.join(home, 'config.json'), JSON.stringify({ smtp: smtpConfig }));
    t = await startTestServer({ home, notifications: { retryDelaysMs: [150, 300], timeoutMs: 2000 } });
  });
  afterAll(async () => {
    await t.cleanup();
    await new Promise<void>((resolve) => smtp.close(resolve));
  });

  it("mails the organization's address when a job fails, succeeds or is cancelled, with what a person needs", async () => {
    await t.server.services.notifications.setEmail(await orgIdOf(t), 'team@example.test');
    const failed = await finishJob(t, 'failed');
    const succeeded = await finishJob(t, 'succeeded', { suffix: 'jokes' });
    const cancelled = await finishJob(t, 'cancelled');
    await eventually(() => (mails.length >= 3 ? true : undefined));
    await sleep(300);
    expect(mails).toHaveLength(3);
    const mailFor = (job: FineTuningJob) => mails.find((m) => m.headers.includes(`Subject: [tunelab] Fine-tuning job ${job.id}`))!;

    for (const mail of mails) {
      expect(mail).toMatchObject({ from: 'tunelab@example.test', to: ['team@example.test'], user: 'tunelab' });
      expect(mail.headers).toContain('From: tunelab <tunelab@example.test>');
      expect(mail.headers).toContain('To: team@example.test');
      expect(mail.headers).toMatch(/Content-Type: text\/plain/);
    }

    const failure = mailFor(failed);
    expect(failure.headers).toContain(`Subject: [tunelab] Fine-tuning job ${failed.id} failed`);
    expect(failure.text).toContain(`Your fine-tuning job ${failed.id} failed.`);
    expect(failure.text).toMatch(new RegExp(`Status: +failed`));
    expect(failure.text).toMatch(new RegExp(`Base model: +${BASE_MODEL}`));
    expect(failure.text).toMatch(new RegExp(`Error: +${ENGINE_ERROR.message.replace('.', '\\.')} \\(engine_error\\)`));
    expect(failure.text).toContain(`Finished:         ${new Date(failed.finished_at! * 1000).toISOString().slice(0, 19).replace('T', ' ')} UTC`);
    expect(failure.text).toContain(`tunelab jobs events ${failed.id}`);

    const success = mailFor(succeeded);
    expect(success.headers).toContain(`Subject: [tunelab] Fine-tuning job ${succeeded.id} succeeded: ${succeeded.fine_tuned_model}`);
    expect(success.text).toMatch(new RegExp(`Fine-tuned model: +${succeeded.fine_tuned_model!.replace(/[.]/g, '\\.')}`));
    expect(success.text).toMatch(/Trained tokens: +12,345/);
    expect(success.text).toMatch(/Organization: +personal/);
    expect(success.text).toMatch(/Suffix: +jokes/);
    expect(success.text).not.toContain('Error:');

    expect(mailFor(cancelled).headers).toContain(`Subject: [tunelab] Fine-tuning job ${cancelled.id} was cancelled`);
    expect(await t.server.services.notifications.deliveries(succeeded.id)).toMatchObject([
      { channel: 'email', target: 'team@example.test', status: 'delivered', attempts: 1 },
    ]);
  });

  it('sends no e-mail once the address is cleared', async () => {
    await t.server.services.notifications.setEmail(await orgIdOf(t), null);
    const before = mails.length;
    const job = await finishJob(t, 'succeeded');
    await sleep(300);
    expect(mails).toHaveLength(before);
    expect(await t.server.services.notifications.deliveries(job.id)).toEqual([]);
    await expect(t.server.services.notifications.setEmail(await orgIdOf(t), 'not an address')).rejects.toThrow(/Not an e-mail address/);
  });
});

describe.skipIf(onPostgres)('tunelab admin', () => {
  let t: TestServer;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    t = await startTestServer({ notifications: { retryDelaysMs: [150], timeoutMs: 1000 } });
    const { OPENAI_API_KEY: _k, OPENAI_BASE_URL: _u, TUNELAB_API_KEY: _t, TUNELAB_BASE_URL: _b, TUNELAB_DATABASE_URL: _d, ...rest } = process.env;
    env = rest;
  });
  afterAll(() => t.cleanup());
  const tunelab = (...args: string[]) => runCli([...args, '--home', t.home], { env });

  it('adds, lists and removes webhook endpoints, and sets the e-mail address, in the home folder the server uses', async () => {
    const hook = await receiver();
    const added = await tunelab('admin', 'webhooks', 'add', hook.url);
    expect(added).toMatchObject({ code: 0, stdout: expect.stringMatching(/^whsec_[A-Za-z0-9+/]{43}=\n$/) });
    const secret = added.stdout.trim();
    const id = /Webhook (whep_[A-Za-z0-9]{24})/.exec(added.stderr)![1]!;

    const listed = await tunelab('admin', 'webhooks', 'list');
    expect(listed.stdout).toMatch(new RegExp(`^ID\\s+URL\\s+CREATED\\n${id}\\s+${hook.url.replace(/[.]/g, '\\.')}\\s+\\d{4}-`));
    expect(listed.stdout).not.toContain('whsec_');

    const job = await finishJob(t, 'succeeded');
    await eventually(() => (hook.received.length >= 1 ? true : undefined));
    expect(signatureIsValid(secret, hook.received[0]!)).toBe(true);
    expect(JSON.parse(hook.received[0]!.body).data.id).toBe(job.id);

    expect(await tunelab('admin', 'webhooks', 'remove', id)).toMatchObject({ code: 0, stdout: `Removed ${id}\n` });
    expect((await tunelab('admin', 'webhooks', 'list')).stdout).toBe('(none)\n');
    expect(await tunelab('admin', 'webhooks', 'remove', id)).toMatchObject({ code: 1, stderr: `error: No such WebhookEndpoint object: ${id}\n` });
    expect(await tunelab('admin', 'webhooks', 'add', 'https://example.com/hook', '--org', 'nobody')).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('No organization named "nobody"'),
    });

    expect(await tunelab('admin', 'org', 'email', 'team@example.test')).toMatchObject({
      code: 0,
      stdout: 'Job e-mails for "personal" go to team@example.test\n',
    });
    expect(await tunelab('admin', 'org', 'email', 'nope')).toMatchObject({ code: 1, stderr: 'error: Not an e-mail address: nope\n' });
    await hook.close();
  });
});
