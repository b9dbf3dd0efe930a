import fs from 'node:fs';
import path from 'node:path';
import type OpenAI from 'openai';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StepMetrics } from '../src/jobs/jobs.js';
import { USER_ACTIONS } from '../src/jobs/status.js';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { type TestServer, allEvents, finished, metricsSteps, startTestServer, validated, weatherJokes } from './support/server.js';

let t: TestServer;
let browser: Browser;
let file: OpenAI.FileObject;
/** The job trained while its page is open; the API tests read it once it has succeeded. */
let trained: OpenAI.FineTuning.FineTuningJob;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  browser = await launchBrowser();
  file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
});
afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
});

/** The metrics endpoint as the dashboard calls it, with whichever key. */
async function metrics(jobId: string, query = '', key = t.apiKey): Promise<{ status: number; body: { object?: string; data: StepMetrics[] } }> {
  const response = await fetch(new URL(`fine_tuning/jobs/${jobId}/metrics${query}`, `${t.server.baseURL}/`), {
    headers: { authorization: `Bearer ${key}` },
  });
  return { status: response.status, body: await response.json() };
}

const points = async (page: Page) => Number(await page.locator('figure[data-points]').getAttribute('data-points'));

describe('the job page', () => {
  it('draws the loss curve as the job trains, one point per step, and offers the result file', async () => {
    // A fixed seed and the training file again for validation, so the curve has its validation loss too.
    trained = await t.client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: file.id, validation_file: file.id, seed: 1, suffix: 'curve' });
    const page = await openDashboard(browser, t, `#/jobs/${trained.id}`);
    await page.getByRole('heading', { name: trained.id }).waitFor();

    // Seen while running: the curve has some steps, and then more, without reloading the page.
    await expect.poll(() => points(page), { timeout: 120_000 }).toBeGreaterThan(0);
    const early = await points(page);
    // Points counted on the page while the API still says running: the curve is drawn during the run, not only at its end.
    let whileRunning = 0;
    await expect
      .poll(
        async () => {
          const shown = await points(page);
          if (shown > early && (await t.client.fineTuning.jobs.retrieve(trained.id)).status === 'running') whileRunning = shown;
          return whileRunning;
        },
        { timeout: 60_000 },
      )
      .toBeGreaterThan(early);

    const done = await finished(t.client, trained.id, 300_000);
    expect(done.status).toBe('succeeded');
    await page.locator('h1 .badge', { hasText: 'succeeded' }).waitFor();
    const steps = await metricsSteps(t.client, trained.id);
    await expect.poll(() => points(page)).toBe(steps.length);
    console.log(`curve: ${early} points, then ${whileRunning} while running, then ${steps.length} when done`);

    // The same steps in the table, with the validation loss at the steps it was evaluated.
    await page.getByText('Show as table').click();
    const rows = page.locator('.line-chart-table tbody tr');
    await expect.poll(() => rows.count()).toBe(steps.length);
    expect(await rows.locator('th').allTextContents()).toEqual(steps.map(String));
    const withValidation = (await metrics(trained.id)).body.data.filter((m) => m.valid_loss !== undefined);
    expect(withValidation.length).toBeGreaterThan(0);
    const evaluated = rows.filter({ has: page.locator('th', { hasText: new RegExp(`^${withValidation[0]!.step}$`) }) });
    expect(await evaluated.locator('td').nth(1).textContent()).toBe(withValidation[0]!.valid_loss!.toFixed(4));
    await page.getByText('Show as table').click();

    // Timeline, resolved hyperparameters, checkpoints that open in the playground, the fine-tuned model.
    const timeline = page.locator('.timeline');
    const moves = (await allEvents(t.client, trained.id)).flatMap((e) => (e.data as { status?: string }).status ?? []);
    expect(moves).toEqual(['validating_files', 'queued', 'running', 'succeeded']);
    expect(await timeline.locator('.timeline-label').allTextContents()).toEqual(['created', 'validating files', 'queued', 'running', 'succeeded']);
    const hyperparameters = await page.getByRole('region', { name: 'Hyperparameters' }).textContent();
    expect(hyperparameters).toContain('Epochs10');
    expect(hyperparameters).not.toContain('auto');
    const checkpoints = await t.client.fineTuning.jobs.checkpoints.list(trained.id);
    expect(checkpoints.data.length).toBeGreaterThan(0);
    for (const checkpoint of checkpoints.data) {
      const row = page.getByRole('row').filter({ has: page.getByRole('cell', { name: checkpoint.fine_tuned_model_checkpoint, exact: true }) });
      const link = row.getByRole('link', { name: 'Open in playground' });
      const target = new URLSearchParams((await link.getAttribute('href'))!.split('?')[1]);
      expect(Object.fromEntries(target)).toEqual({ left: TINY_MODEL_NAME, right: checkpoint.fine_tuned_model_checkpoint });
    }
    expect(await page.locator('.names').textContent()).toContain(done.fine_tuned_model!);

    // The result file comes through the page with the key; its rows are the steps.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download step_metrics.csv' }).click()]);
    const csv = fs.readFileSync((await download.path())!, 'utf8').trim().split('\n');
    expect(csv[0]).toMatch(/^step,/);
    expect(csv.length - 1).toBe(steps.length);

    await screenshot(page, 'job');
    await page.setViewportSize({ width: 390, height: 844 });
    // The chart follows its container down to the narrow width.
    await expect.poll(() => page.locator('.line-chart-plot canvas').first().evaluate((canvas) => canvas.getBoundingClientRect().width)).toBeLessThan(390);
    await screenshot(page, 'job-narrow');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.close();
  }, 420_000);

  it("shows a DPO job's reward margin and accuracy, and opens its result beside the fine-tune it started from", async () => {
    const pairs = await t.client.files.create({ file: fs.createReadStream(path.join(import.meta.dirname, 'fixtures/weather-preferences.jsonl')), purpose: 'fine-tune' });
    const start = (await t.client.fineTuning.jobs.retrieve(trained.id)).fine_tuned_model!;
    const job = await t.client.fineTuning.jobs.create({
      model: start,
      training_file: pairs.id,
      seed: 1,
      suffix: 'dpo',
      method: { type: 'dpo', dpo: { hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.2 } } },
    });
    const done = await finished(t.client, job.id, 300_000);
    expect(done.status, JSON.stringify(done.error)).toBe('succeeded');
    const page = await openDashboard(browser, t, `#/jobs/${job.id}`);
    await page.getByRole('heading', { name: job.id }).waitFor();
    await page.getByText('Loss, reward margin and reward accuracy per step').waitFor();
    expect(await page.locator('main').textContent()).toContain('DPO (preference pairs)');
    expect(await page.getByRole('region', { name: 'Hyperparameters' }).textContent()).toContain('Beta (DPO)0.1');

    await page.getByText('Show as table').click();
    const table = page.locator('.line-chart-table');
    expect(await table.locator('thead th').allTextContents()).toEqual(['Step', 'Training loss', 'Reward margin', 'Reward accuracy']);
    const last = (await metrics(job.id)).body.data.at(-1)!;
    const cells = await table.locator('tbody tr').last().locator('td').allTextContents();
    expect(cells).toEqual([last.train_loss!.toFixed(4), last.train_reward_margin!.toFixed(4), last.train_reward_accuracy!.toFixed(3)]);

    const link = page.locator('.names').getByRole('link', { name: 'Open in playground' });
    const target = new URLSearchParams((await link.getAttribute('href'))!.split('?')[1]);
    expect(Object.fromEntries(target)).toEqual({ left: start, right: done.fine_tuned_model });
    await screenshot(page, 'job-dpo');
    await page.close();
  }, 420_000);

  it('pauses, resumes and cancels a job with its buttons, cancelling only once confirmed', async () => {
    const job = await t.client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: file.id, seed: 1, suffix: 'actions' });
    await validated(t.client, job.id);
    const page = await openDashboard(browser, t, `#/jobs/${job.id}`);
    const badge = page.locator('h1 .badge');
    const button = (name: string) => page.getByRole('button', { name, exact: true });

    // Queued or already running: both may be paused.
    await button('Pause').click();
    await badge.filter({ hasText: 'paused' }).waitFor();
    expect((await t.client.fineTuning.jobs.retrieve(job.id)).status).toBe('paused');
    expect(await button('Pause').count()).toBe(0);

    await button('Resume').click();
    await badge.filter({ hasText: /queued|running/ }).waitFor();
    expect(await button('Resume').count()).toBe(0);

    await button('Cancel job').click();
    await button('Keep it').click();
    expect((await t.client.fineTuning.jobs.retrieve(job.id)).status).not.toBe('cancelled');

    await button('Cancel job').click();
    await button('Yes, cancel it').click();
    await badge.filter({ hasText: 'cancelled' }).waitFor();
    expect((await t.client.fineTuning.jobs.retrieve(job.id)).status).toBe('cancelled');
    await expect.poll(() => page.locator('.job-actions button').count()).toBe(0);
    for (const moment of ['paused', 'cancelled']) await page.locator('.timeline').getByText(moment, { exact: true }).waitFor();
    // Back in queued after the pause, with the words that say why.
    await page.locator('.timeline').getByText(USER_ACTIONS.resume.message).waitFor();
    await screenshot(page, 'job-cancelled');
    await page.close();
  }, 120_000);
});

describe('GET /v1/fine_tuning/jobs/:id/metrics', () => {
  it('gives every step, oldest first, and from a step on; only to the job’s organization', async () => {
    const { status, body } = await metrics(trained.id);
    expect(status).toBe(200);
    expect(body.object).toBe('list');
    const steps = body.data.map((m) => m.step);
    expect(steps).toEqual(await metricsSteps(t.client, trained.id));
    expect(steps).toEqual(Array.from({ length: body.data[0]!.total_steps }, (_, i) => i + 1));
    for (const m of body.data) {
      expect(typeof m.train_loss).toBe('number');
      expect(typeof m.train_mean_token_accuracy).toBe('number');
    }

    // From a step on, that step included: it may have gained its evaluation since it was first read.
    const last = steps.at(-1)!;
    expect((await metrics(trained.id, `?from_step=${last - 1}`)).body.data.map((m) => m.step)).toEqual([last - 1, last]);
    expect((await metrics(trained.id, `?from_step=${last + 1}`)).body.data).toEqual([]);
    expect((await metrics(trained.id, '?from_step=-1')).status).toBe(400);

    const other = (await t.server.services.orgs.createKey('other-corp')).key;
    expect((await metrics(trained.id, '', other)).status).toBe(404);
    expect((await metrics('ftjob-nosuchjob')).status).toBe(404);
  });
});
