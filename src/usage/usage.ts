import { randomToken, unixSeconds } from '../ids.js';
import { type Prices, trainingCost } from '../datasets/stats.js';
import type { FineTuningJob } from '../jobs/jobs.js';
import type { UsageRecordTable } from '../store/schema.js';
import type { Db } from '../store/store.js';

/** One month of an organization's usage, as `GET /v1/usage` lists it. Costs are US dollars. */
export interface MonthUsage {
  object: 'usage.month';
  /** `YYYY-MM`, UTC. */
  month: string;
  /** Succeeded fine-tuning jobs. */
  training_jobs: number;
  /** Their `trained_tokens` (tokens times epochs), the billed amount. */
  training_tokens: number;
  training_cost: number;
  inference_input_tokens: number;
  inference_output_tokens: number;
  inference_cost: number;
  total_cost: number;
}

export const MONTH = /^\d{4}-(0[1-9]|1[0-2])$/;

const monthOf = (unixSeconds: number) => new Date(unixSeconds * 1000).toISOString().slice(0, 7);
const micros = (dollars: number) => Math.round(dollars * 1_000_000);
const dollars = (micros: number) => Math.round(micros) / 1_000_000;

type OnError = (message: string, error: unknown) => void;

/**
 * Usage kept as rows (`usage_records`): a row per succeeded job's trained tokens, priced when it
 * is recorded with the prices of `config.json`; inference rows (chat completions) will sit beside
 * them. Recording is idempotent per (kind, source_id), so the job change and the start-up sweep
 * can both try.
 */
export class UsageService {
  constructor(
    private readonly db: Db,
    private readonly prices: Prices,
    private readonly onError: OnError = () => {},
  ) {}

  /** For `jobs.onChange`: a job that has just succeeded is charged its trained tokens. */
  jobChanged(job: FineTuningJob): void {
    if (job.status !== 'succeeded') return;
    this.recordTraining(job).catch((error: unknown) => this.onError(`recording the usage of ${job.id} failed`, error));
  }

  async recordTraining(job: Pick<FineTuningJob, 'id' | 'organization_id' | 'model' | 'trained_tokens' | 'finished_at'>): Promise<boolean> {
    if (job.trained_tokens === null) return false;
    return this.insert({
      org_id: job.organization_id,
      month: monthOf(job.finished_at ?? unixSeconds()),
      kind: 'training',
      model: job.model,
      source_id: job.id,
      tokens: job.trained_tokens,
      input_tokens: 0,
      output_tokens: 0,
      cost_micros: micros(trainingCost(job.trained_tokens, this.prices)),
    });
  }

  /**
   * A chat completion's tokens at the input and output prices. `sourceId` (a request id) makes a
   * second call for the same request a no-op; without one every call adds a row.
   */
  async recordInference(usage: {
    orgId: string;
    model: string;
    inputTokens: number;
    outputTokens: number;
    sourceId?: string | null;
    at?: number;
  }): Promise<boolean> {
    const cost = (usage.inputTokens / 1000) * this.prices.input_per_1k + (usage.outputTokens / 1000) * this.prices.output_per_1k;
    return this.insert({
      org_id: usage.orgId,
      month: monthOf(usage.at ?? unixSeconds()),
      kind: 'inference',
      model: usage.model,
      source_id: usage.sourceId ?? null,
      tokens: usage.inputTokens + usage.outputTokens,
      input_tokens: usage.inputTokens,
      output_tokens: usage.outputTokens,
      cost_micros: micros(cost),
    });
  }

  /** On start: succeeded jobs whose usage was not recorded (a crash in between, another process). */
  async sweep(): Promise<number> {
    const missed = await this.db
      .selectFrom('jobs')
      .leftJoin('usage_records', (join) =>
        join.onRef('usage_records.source_id', '=', 'jobs.id').on('usage_records.kind', '=', 'training'),
      )
      .select(['jobs.id', 'jobs.org_id', 'jobs.model', 'jobs.trained_tokens', 'jobs.finished_at'])
      .where('jobs.status', '=', 'succeeded')
      .where('jobs.trained_tokens', 'is not', null)
      .where('usage_records.id', 'is', null)
      .execute();
    let added = 0;
    for (const job of missed) if (await this.recordTraining({ ...job, organization_id: job.org_id })) added++;
    return added;
  }

  /** Totals per month, newest first; for one month, that month (zeros when nothing was used). */
  async monthly(orgId: string, month?: string): Promise<MonthUsage[]> {
    let query = this.db
      .selectFrom('usage_records')
      .select((eb) => [
        'month',
        'kind',
        eb.fn.countAll().as('rows'),
        eb.fn.sum('tokens').as('tokens'),
        eb.fn.sum('input_tokens').as('input_tokens'),
        eb.fn.sum('output_tokens').as('output_tokens'),
        eb.fn.sum('cost_micros').as('cost_micros'),
      ])
      .where('org_id', '=', orgId)
      .groupBy(['month', 'kind'])
      .orderBy('month', 'desc');
    if (month !== undefined) query = query.where('month', '=', month);
    const months = new Map<string, MonthUsage & { micros: number }>();
    const empty = (m: string) => ({
      object: 'usage.month' as const,
      month: m,
      training_jobs: 0,
      training_tokens: 0,
      training_cost: 0,
      inference_input_tokens: 0,
      inference_output_tokens: 0,
      inference_cost: 0,
      total_cost: 0,
      micros: 0,
    });
    if (month !== undefined) months.set(month, empty(month));
    // PostgreSQL sums bigints as numeric, which arrives as a string.
    for (const row of await query.execute()) {
      const entry = months.get(row.month) ?? empty(row.month);
      months.set(row.month, entry);
      const cost = Number(row.cost_micros);
      entry.micros += cost;
      if (row.kind === 'training') {
        entry.training_jobs += Number(row.rows);
        entry.training_tokens += Number(row.tokens);
        entry.training_cost = dollars(cost);
      } else {
        entry.inference_input_tokens += Number(row.input_tokens);
        entry.inference_output_tokens += Number(row.output_tokens);
        entry.inference_cost = dollars(cost);
      }
    }
    return [...months.values()].map(({ micros: total, ...entry }) => ({ ...entry, total_cost: dollars(total) }));
  }

  private async insert(row: Omit<UsageRecordTable, 'seq' | 'id' | 'created_at'>): Promise<boolean> {
    const inserted = await this.db
      .insertInto('usage_records')
      .values({ ...row, id: `usage_${randomToken()}`, created_at: unixSeconds() })
      .onConflict((conflict) => conflict.columns(['kind', 'source_id']).doNothing())
      .returning('id')
      .execute();
    return inserted.length > 0;
  }
}
