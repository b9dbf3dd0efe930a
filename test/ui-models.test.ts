import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import type { MonthUsage } from '../src/usage/usage.js';
import { launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { DATASETS, type TestServer, finished, startTestServer, weatherJokes } from './support/server.js';

const [question, answer] = (() => {
  const first = JSON.parse(fs.readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'), 'utf8').split('\n')[0]!) as {
    messages: Array<{ role: string; content: string }>;
  };
  return [first.messages.find((m) => m.role === 'user')!.content, first.messages.at(-1)!.content];
})();

let t: TestServer;
let browser: Browser;
let fineTune: string;
let jobId: string;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  // A fixed seed: the fine-tune then gives back every trained answer word for word.
  const job = await t.client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: file.id, suffix: 'ui', seed: 1 });
  const done = await finished(t.client, job.id, 300_000);
  expect(done.status).toBe('succeeded');
  fineTune = done.fine_tuned_model!;
  jobId = job.id;
  browser = await launchBrowser();
}, 600_000);
afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
});

const pane = (page: Page, side: 'Left' | 'Right') => page.getByRole('region', { name: new RegExp(`^${side}: `) });

describe('the playground', () => {
  it('streams the answers of the base model and of the fine-tune side by side', async () => {
    const page = await openDashboard(browser, t, `#/playground?left=${TINY_MODEL_NAME}&right=${encodeURIComponent(fineTune)}`);
    await expect.poll(() => page.getByLabel('Right model').inputValue()).toBe(fineTune);
    expect(await page.getByLabel('Left model').inputValue()).toBe(TINY_MODEL_NAME);
    // Counts how often each pane's answer changes while it streams.
    await page.evaluate(() => {
      const counts = ((window as unknown as { answerUpdates: number[] }).answerUpdates = [0, 0]);
      document.querySelectorAll('section.pane').forEach((section, side) =>
        new MutationObserver(() => counts[side]!++).observe(section, { subtree: true, childList: true, characterData: true }),
      );
    });
    const streamed: string[] = [];
    page.on('response', async (response) => {
      if (response.url().endsWith('/v1/chat/completions')) streamed.push(`${response.status()} ${response.headers()['content-type']}`);
    });

    await page.getByLabel('Max tokens').fill('64');
    await page.getByLabel('Message').fill(question);
    await page.getByLabel('Message').press('Enter');
    for (const side of ['Left', 'Right'] as const) await pane(page, side).locator('.assistant[data-done="true"]').waitFor({ timeout: 60_000 });

    expect(await pane(page, 'Right').locator('.assistant').textContent()).toBe(answer);
    const babble = await pane(page, 'Left').locator('.assistant').textContent();
    expect(babble).not.toBe(answer);
    expect(babble!.length).toBeGreaterThan(0);
    expect(streamed).toEqual(['200 text/event-stream; charset=utf-8', '200 text/event-stream; charset=utf-8']);
    // The base model writes 64 tokens: they arrive in more than one piece.
    const updates = await page.evaluate(() => (window as unknown as { answerUpdates: number[] }).answerUpdates);
    expect(updates[0]).toBeGreaterThan(2);
    expect(await pane(page, 'Left').getByText(/64 tokens in .* cut at max tokens/).count()).toBe(1);
    // Which backend answered (the engine here; llama.cpp where config.json serves a GGUF export).
    expect(await pane(page, 'Right').getByText(/answered by tunelab engine/).count()).toBe(1);
    await screenshot(page, 'playground');

    // A second turn goes on from each model's own first answer.
    await page.getByLabel('Message').fill('再说一遍');
    await page.getByRole('button', { name: 'Send' }).click();
    for (const side of ['Left', 'Right'] as const) await expect.poll(() => pane(page, side).locator('.assistant[data-done="true"]').count(), { timeout: 60_000 }).toBe(2);
    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot(page, 'playground-narrow');
    await page.close();
  }, 180_000);
});

describe('the playground, when an answer goes wrong', () => {
  it('shows one pane refused while the other answers, and stops both when asked', async () => {
    const missing = `${fineTune}x`;
    const page = await openDashboard(browser, t, `#/playground?left=${TINY_MODEL_NAME}&right=${encodeURIComponent(missing)}`);
    await page.getByLabel('Message').fill(question);
    await page.getByLabel('Message').press('Enter');
    await pane(page, 'Right').locator('.error').waitFor();
    expect(await pane(page, 'Right').locator('.error').textContent()).toContain(`The model \`${missing}\` does not exist`);
    await pane(page, 'Left').locator('.assistant[data-done="true"]').waitFor({ timeout: 60_000 });
    expect(await pane(page, 'Left').locator('.error').count()).toBe(0);

    // Long answers from the base model on both sides, stopped as soon as text arrives.
    await page.getByLabel('Right model').selectOption(TINY_MODEL_NAME);
    await page.getByLabel('Max tokens').fill('');
    await page.getByLabel('Max tokens').type('400');
    expect(await page.getByLabel('Max tokens').inputValue()).toBe('400');
    await page.getByLabel('Temperature').fill('1');
    await page.getByLabel('Message').fill('讲个长故事');
    await page.getByLabel('Message').press('Enter');
    await expect.poll(() => pane(page, 'Left').locator('.assistant').nth(1).textContent(), { timeout: 60_000 }).not.toBe('…');
    await page.getByRole('button', { name: 'Stop' }).click();
    for (const side of ['Left', 'Right'] as const) {
      await expect.poll(() => pane(page, side).locator('.turn').nth(1).locator('.error').textContent()).toBe('Stopped.');
    }
    await page.getByRole('button', { name: 'Send' }).waitFor();
    await page.close();
  }, 180_000);
});

describe('the models page', () => {
  it('lists base models and fine-tunes with their job, and deletes a checkpoint', async () => {
    const checkpoints = (await t.client.fineTuning.jobs.checkpoints.list(jobId)).data.map((c) => c.fine_tuned_model_checkpoint);
    const intermediate = checkpoints.find((id) => id !== fineTune)!;
    const page = await openDashboard(browser, t, '#/models');
    const base = page.getByRole('table', { name: 'Base models' });
    await base.getByText(TINY_MODEL_NAME, { exact: true }).waitFor();
    const tuned = page.getByRole('table', { name: 'Fine-tuned models' });
    const row = tuned.getByRole('row').filter({ has: page.getByText(fineTune, { exact: true }) });
    expect(await row.getByRole('link', { name: jobId }).count()).toBe(1);
    const checkpointRow = tuned.getByRole('row').filter({ has: page.getByText(intermediate, { exact: true }) });
    expect(await checkpointRow.textContent()).toMatch(/checkpoint, step \d+/);
    expect(await checkpointRow.getByRole('link', { name: jobId }).count()).toBe(1);
    await screenshot(page, 'models');
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'models-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });

    page.once('dialog', (dialog) => dialog.accept());
    await page.getByRole('button', { name: `Delete ${intermediate}` }).click();
    await expect.poll(() => page.getByText(intermediate, { exact: true }).count()).toBe(0);
    await expect(t.client.models.retrieve(intermediate)).rejects.toMatchObject({ status: 404 });
    expect((await t.client.models.retrieve(fineTune)).id).toBe(fineTune);
    await page.close();
  });
});

describe('the usage page', () => {
  it('shows the month’s training and inference tokens and their cost as the API counts them', async () => {
    await t.client.chat.completions.create({ model: fineTune, messages: [{ role: 'user', content: question }], max_tokens: 8 });
    const [month] = (await t.client.get<{ data: MonthUsage[] }>('/usage')).data;
    const page = await openDashboard(browser, t, '#/usage');
    const row = page.getByRole('table', { name: 'Usage per month' }).getByRole('row').nth(1);
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    expect(cells.slice(0, 2)).toEqual([String(month!.training_jobs), month!.training_tokens.toLocaleString('en-US')]);
    expect(cells[3]).toBe(month!.inference_input_tokens.toLocaleString('en-US'));
    expect(month!.inference_output_tokens).toBeGreaterThan(0);
    await screenshot(page, 'usage');
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'usage-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.close();
  });
});
