import type { Selectable } from 'kysely';
import { invalidRequest, noSuch } from '../errors.js';
import { randomToken, unixSeconds } from '../ids.js';
import type { FineTuningJob } from '../jobs/jobs.js';
import { type JobStatus, isFinished } from '../jobs/status.js';
import type { NotificationDeliveryTable } from '../store/schema.js';
import { SecretBox } from '../store/secret-box.js';
import type { Db } from '../store/store.js';
import { type MailContent, jobEvent, jobMail } from './messages.js';
import { newWebhookSecret, signatureHeaders } from './signing.js';

export interface WebhookEndpoint {
  id: string;
  object: 'webhook_endpoint';
  url: string;
  created_at: number;
}

/** What sends a job e-mail; `smtpMailer` is the real one. */
export interface Mailer {
  send(message: MailContent & { to: string }): Promise<void>;
  close(): void;
}

export interface DeliveryOptions {
  /**
   * Wait after each failed attempt, in milliseconds; when they run out the delivery is given
   * up. The default is the Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
   * (eight attempts over about 27 hours).
   */
  retryDelaysMs?: number[];
  /** How long one webhook request (connect, send, answer) may take. Default 15 s. */
  timeoutMs?: number;
}

export const STANDARD_RETRY_DELAYS_MS = [5, 300, 1800, 7200, 18000, 36000, 36000].map((s) => s * 1000);
const DEFAULT_TIMEOUT_MS = 15_000;
/** Longest sleep of the delivery loop: deliveries another process enqueued are found within it. */
const POLL_MS = 30_000;
const BATCH = 16;

type Delivery = Selectable<NotificationDeliveryTable>;
type OnError = (message: string, error: unknown) => void;

const deliveryId = () => `wh_${randomToken()}`;
const isEmail = (address: string) => /^[^\s@<>,;"]+@[^\s@<>,;"]+$/.test(address);

/**
 * Job notifications: when a job finishes, a `fine_tuning.job.<status>` event goes to each of its
 * organization's webhook endpoints (signed per Standard Webhooks) and, when SMTP is configured,
 * an e-mail to the organization's address. Each is a row in `notification_deliveries`, retried
 * with backoff until it goes or the schedule runs out, and picked up again after a restart.
 */
export class NotificationService {
  private readonly retryDelaysMs: number[];
  private readonly timeoutMs: number;
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private abort = new AbortController();

  constructor(
    private readonly db: Db,
    /** Seals the endpoints' signing secrets in the database. */
    private readonly secrets: SecretBox,
    private readonly mailer: Mailer | null,
    private readonly onError: OnError = () => {},
    options: DeliveryOptions = {},
  ) {
    this.retryDelaysMs = options.retryDelaysMs ?? STANDARD_RETRY_DELAYS_MS;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  // --- configuration, per organization ---

  /** Registers a URL; the secret is returned here only, to be given to the receiver. */
  async addEndpoint(orgId: string, url: string): Promise<WebhookEndpoint & { secret: string }> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw invalidRequest(`Invalid webhook URL: ${url}`, 'url');
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw invalidRequest(`A webhook URL must be http(s): ${url}`, 'url');
    const secret = newWebhookSecret();
    const id = `whep_${randomToken()}`;
    const row = { id, org_id: orgId, url: parsed.href, secret: this.secrets.seal(secret, id), created_at: unixSeconds() };
    await this.db.insertInto('webhook_endpoints').values(row).execute();
    return { id: row.id, object: 'webhook_endpoint', url: row.url, created_at: row.created_at, secret };
  }

  async listEndpoints(orgId: string): Promise<WebhookEndpoint[]> {
    const rows = await this.db
      .selectFrom('webhook_endpoints')
      .select(['id', 'url', 'created_at'])
      .where('org_id', '=', orgId)
      .orderBy('seq', 'asc')
      .execute();
    return rows.map((r) => ({ id: r.id, object: 'webhook_endpoint', url: r.url, created_at: r.created_at }));
  }

  /** Removes an endpoint; what was still to be sent to it is given up. */
  async removeEndpoint(orgId: string, id: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const removed = await trx.deleteFrom('webhook_endpoints').where('id', '=', id).where('org_id', '=', orgId).executeTakeFirst();
      if (Number(removed.numDeletedRows) === 0) throw noSuch('WebhookEndpoint', id, 'id');
      await trx
        .updateTable('notification_deliveries')
        .set({ status: 'failed', last_error: 'The webhook endpoint was removed.', finished_at: unixSeconds() })
        .where('endpoint_id', '=', id)
        .where('status', '=', 'pending')
        .execute();
    });
  }

  /** The address job e-mails go to; null stops them. */
  async setEmail(orgId: string, address: string | null): Promise<void> {
    if (address !== null && !isEmail(address)) throw invalidRequest(`Not an e-mail address: ${address}`, 'email');
    const updated = await this.db.updateTable('organizations').set({ email: address }).where('id', '=', orgId).executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) throw noSuch('Organization', orgId);
  }

  /** Every delivery of a job's notification, oldest first: what was sent where, and how it went. */
  async deliveries(jobId: string): Promise<Delivery[]> {
    return this.db.selectFrom('notification_deliveries').selectAll().where('job_id', '=', jobId).orderBy('seq', 'asc').execute();
  }

  // --- enqueueing ---

  /** For `jobs.onChange`: a job that has just finished is announced. */
  jobChanged(job: FineTuningJob): void {
    if (!isFinished(job.status)) return;
    this.enqueue(job).then(
      (added) => added && this.kick(),
      (error: unknown) => this.onError(`enqueueing the notifications of ${job.id} failed`, error),
    );
  }

  /**
   * Writes the job's deliveries, once: the `job_notifications` row and the deliveries commit
   * together, and a second call (the change and the start-up sweep racing, a restart) finds the
   * row and adds nothing. Returns whether anything was added.
   */
  async enqueue(job: FineTuningJob): Promise<boolean> {
    const event = jobEvent(`evt_${randomToken()}`, job);
    const body = JSON.stringify(event);
    const now = Date.now();
    return this.db.transaction().execute(async (trx) => {
      const claimed = await trx
        .insertInto('job_notifications')
        .values({ job_id: job.id, event_id: event.id, event_type: event.type, created_at: unixSeconds(now) })
        .onConflict((conflict) => conflict.column('job_id').doNothing())
        .returning('job_id')
        .execute();
      if (claimed.length === 0) return false;
      const org = await trx
        .selectFrom('organizations')
        .select(['name', 'email'])
        .where('id', '=', job.organization_id)
        .executeTakeFirstOrThrow();
      const endpoints = await trx
        .selectFrom('webhook_endpoints')
        .select(['id', 'url'])
        .where('org_id', '=', job.organization_id)
        .orderBy('seq', 'asc')
        .execute();
      const base = {
        job_id: job.id,
        org_id: job.organization_id,
        status: 'pending' as const,
        attempts: 0,
        next_attempt_at: now,
        last_error: null,
        created_at: unixSeconds(now),
        finished_at: null,
      };
      const rows: Array<Omit<Delivery, 'seq'>> = endpoints.map((endpoint) => ({
        ...base,
        id: deliveryId(),
        channel: 'webhook',
        endpoint_id: endpoint.id,
        target: endpoint.url,
        payload: body,
      }));
      if (this.mailer && org.email) {
        rows.push({
          ...base,
          id: deliveryId(),
          channel: 'email',
          endpoint_id: null,
          target: org.email,
          payload: JSON.stringify(jobMail(job, org.name)),
        });
      }
      if (rows.length) await trx.insertInto('notification_deliveries').values(rows).execute();
      return rows.length > 0;
    });
  }

  /**
   * On start: jobs that finished while no one was listening (a crash between the move and the
   * enqueue, a job another process finished) are announced now.
   */
  /** Seals the signing secrets a server from before sealing stored as they were. */
  async sealStoredSecrets(): Promise<void> {
    const rows = await this.db.selectFrom('webhook_endpoints').select(['id', 'secret']).execute();
    for (const row of rows.filter((r) => !SecretBox.isSealed(r.secret))) {
      await this.db.updateTable('webhook_endpoints').set({ secret: this.secrets.seal(row.secret, row.id) }).where('id', '=', row.id).execute();
    }
  }

  async sweep(jobs: { get(orgId: string, id: string): Promise<FineTuningJob> }): Promise<number> {
    const missed = await this.db
      .selectFrom('jobs')
      .leftJoin('job_notifications', 'job_notifications.job_id', 'jobs.id')
      .select(['jobs.id', 'jobs.org_id'])
      .where('jobs.status', 'in', ['succeeded', 'failed', 'cancelled'] satisfies JobStatus[])
      .where('job_notifications.job_id', 'is', null)
      .orderBy('jobs.seq', 'asc')
      .execute();
    let added = 0;
    for (const { id, org_id } of missed) if (await this.enqueue(await jobs.get(org_id, id))) added++;
    return added;
  }

  // --- the delivery loop ---

  start(): void {
    this.stopped = false;
    this.abort = new AbortController();
    this.kick();
  }

  /** Stops the loop; an attempt under way is cut off and will be made again after the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    await this.running;
    this.mailer?.close();
  }

  /** Runs the loop now (something was enqueued), or again once the current round ends. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.loop().finally(() => {
      this.running = null;
    });
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        while (!this.stopped) {
          const due = await this.db
            .selectFrom('notification_deliveries')
            .selectAll()
            .where('status', '=', 'pending')
            .where('next_attempt_at', '<=', Date.now())
            .orderBy('next_attempt_at', 'asc')
            .limit(BATCH)
            .execute();
          if (due.length === 0) break;
          await Promise.all(due.map((delivery) => this.attempt(delivery)));
        }
      } catch (error) {
        if (!this.stopped) this.onError('delivering notifications failed', error);
      }
    } while (this.again && !this.stopped);
    if (!this.stopped) await this.sleep();
  }

  /** Sleeps until the next delivery is due (at most POLL_MS). */
  private async sleep(): Promise<void> {
    let wait = POLL_MS;
    try {
      const next = await this.db
        .selectFrom('notification_deliveries')
        .select((eb) => eb.fn.min('next_attempt_at').as('at'))
        .where('status', '=', 'pending')
        .executeTakeFirst();
      if (next?.at !== null && next?.at !== undefined) wait = Math.min(POLL_MS, Math.max(0, Number(next.at) - Date.now()));
    } catch (error) {
      if (!this.stopped) this.onError('reading the notification queue failed', error);
    }
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.kick(), wait);
    this.timer.unref();
  }

  private async attempt(delivery: Delivery): Promise<void> {
    // Claimed by moving its time on past the attempt's own limit: another server on the same
    // database skips it, and if this process dies mid-attempt the row is tried again after that.
    const attempts = delivery.attempts + 1;
    const claim = await this.db
      .updateTable('notification_deliveries')
      .set({ attempts, next_attempt_at: Date.now() + this.timeoutMs + 5_000 })
      .where('id', '=', delivery.id)
      .where('status', '=', 'pending')
      .where('attempts', '=', delivery.attempts)
      .executeTakeFirst();
    if (Number(claim.numUpdatedRows) !== 1) return;

    let failure: string | null;
    try {
      failure = delivery.channel === 'webhook' ? await this.post(delivery) : await this.mail(delivery);
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error);
    }
    if (failure !== null && this.stopped) {
      // Cut off by stop(): not the receiver's fault, so not counted; it goes first after the next start.
      await this.db
        .updateTable('notification_deliveries')
        .set({ attempts: delivery.attempts, next_attempt_at: Date.now() })
        .where('id', '=', delivery.id)
        .where('status', '=', 'pending')
        .execute();
      return;
    }
    const now = Date.now();
    const update =
      failure === null
        ? { status: 'delivered' as const, last_error: null, finished_at: unixSeconds(now) }
        : attempts > this.retryDelaysMs.length
          ? { status: 'failed' as const, last_error: failure, finished_at: unixSeconds(now) }
          : { next_attempt_at: now + this.retryDelaysMs[attempts - 1]!, last_error: failure };
    await this.db.updateTable('notification_deliveries').set(update).where('id', '=', delivery.id).execute();
    if (failure !== null && update.status === 'failed') {
      const what = `the ${delivery.channel} notification ${delivery.id} to ${delivery.target}`;
      this.onError(`giving up on ${what} after ${attempts} attempts`, new Error(failure));
    }
  }

  /** One signed POST; null when the receiver answered 2xx, otherwise what went wrong. */
  private async post(delivery: Delivery): Promise<string | null> {
    const endpoint = delivery.endpoint_id
      ? await this.db.selectFrom('webhook_endpoints').select(['id', 'secret']).where('id', '=', delivery.endpoint_id).executeTakeFirst()
      : undefined;
    if (!endpoint) return 'The webhook endpoint was removed.';
    const response = await fetch(delivery.target, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'tunelab-webhooks',
        ...signatureHeaders(this.secrets.open(endpoint.secret, endpoint.id), delivery.id, unixSeconds(), delivery.payload),
      },
      body: delivery.payload,
      redirect: 'manual',
      signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.timeoutMs)]),
    });
    // The answer's body is not wanted; reading it frees the connection.
    await response.arrayBuffer().catch(() => undefined);
    return response.status >= 200 && response.status < 300 ? null : `HTTP ${response.status} from ${delivery.target}`;
  }

  private async mail(delivery: Delivery): Promise<string | null> {
    if (!this.mailer) return 'SMTP is not configured (the smtp section of config.json).';
    const content = JSON.parse(delivery.payload) as MailContent;
    await this.mailer.send({ to: delivery.target, ...content });
    return null;
  }
}
