import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page, Route } from 'playwright-core';
import { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileReport } from '../src/datasets/file-reports.js';
import { count, dollars } from '../src/ui/format.js';
import { launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { BASE_MODEL, DATASETS, type TestServer, startTestServer } from './support/server.js';

let t: TestServer;
let browser: Browser;

beforeAll(async () => {
  t = await startTestServer();
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
});

const dataset = (name: string) => path.join(DATASETS, name);
/** The file page's id, once the upload has taken the browser there. */
const fileIdOf = async (page: Page) => {
  await page.waitForURL(/#\/files\/file-/);
  return decodeURIComponent(new URL(page.url()).hash.split('/')[2]!);
};
/** A value of the report's facts, by its label. */
const fact = (page: Page, label: string) =>
  page
    .locator('dl.facts > div')
    .filter({ has: page.getByText(label, { exact: true }) })
    .locator('dd')
    .textContent();
const apiReport = (fileId: string) => t.client.get<FileReport>(`/files/${fileId}/report`, { query: { model: BASE_MODEL, show: 3 } });

/** Drops a file on the drop zone as a browser does: a drop event whose DataTransfer holds it. */
async function dropFile(page: Page, name: string, content: string) {
  const dataTransfer = await page.evaluateHandle(
    ({ name, content }) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([content], name, { type: 'application/octet-stream' }));
      return transfer;
    },
    { name, content },
  );
  await page.locator('.drop-zone').dispatchEvent('drop', { dataTransfer });
}

describe('the files pages', () => {
  it("uploads a file through the page and shows the doctor's report: the API's numbers, histograms, trained tokens", async () => {
    const page = await openDashboard(browser, t, '#/files');
    await page.getByText('Drop a JSONL file here, or choose one').waitFor();
    // Held back a moment on its way to the server, so the progress bar can be seen.
    let hold!: (route: Route) => void;
    const held = new Promise<Route>((resolve) => (hold = resolve));
    await page.route('**/v1/files', (route) => (route.request().method() === 'POST' ? hold(route) : route.continue()));
    await page.locator('input[type=file]').setInputFiles(dataset('weather-jokes.jsonl'));
    await page.getByRole('progressbar', { name: 'Uploading weather-jokes.jsonl' }).waitFor();
    expect(await page.locator('.upload-progress').textContent()).toContain('Uploading weather-jokes.jsonl: 0%');
    // The bar's values as the upload reports its progress (the page is the same document after it moves on).
    await page.evaluate(() => {
      const seen: number[] = [];
      (window as unknown as { progressSeen: number[] }).progressSeen = seen;
      const bar = document.querySelector('progress')!;
      new MutationObserver(() => seen.push(bar.value)).observe(bar, { attributes: true, attributeFilter: ['value'] });
    });
    await screenshot(page, 'files-uploading');
    await (await held).continue();
    const fileId = await fileIdOf(page);
    const size = fs.statSync(dataset('weather-jokes.jsonl')).size;
    // The request's body is the form around the file, a little more than the file.
    const seen = await page.evaluate(() => (window as unknown as { progressSeen: number[] }).progressSeen);
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(size);
    await page.getByText('can train', { exact: true }).waitFor();

    const report = await apiReport(fileId);
    expect(report.can_train).toBe(true);
    expect(await fact(page, 'Examples')).toBe(count(report.n_examples));
    expect(await fact(page, `Billing tokens (${BASE_MODEL})`)).toBe(count(report.billing_tokens));
    expect(await fact(page, 'Charged tokens')).toContain(count(report.charged_tokens));
    expect(await fact(page, 'Estimated cost')).toBe(dollars(report.estimated_cost_usd));
    expect(await fact(page, 'Epochs')).toContain(String(report.n_epochs));
    const tokensRow = page.getByRole('row').filter({ hasText: `${BASE_MODEL} (billing)` });
    expect(await tokensRow.textContent()).toContain(count(report.token_counts[BASE_MODEL]!.trained));

    const distributions = report.token_counts[BASE_MODEL]!.distributions;
    const histograms = page.locator('figure.histogram');
    expect(await histograms.count()).toBe(3);
    const totals = histograms.filter({ hasText: 'Total tokens per example' });
    expect(await totals.locator('.histogram-bar').count()).toBe(distributions.total_tokens!.histogram.length);
    expect(await totals.getByRole('img').getAttribute('aria-label')).toMatch(/^Total tokens per example\. Examples by tokens: /);

    const examples = page.locator('figure.shown-example');
    expect(await examples.count()).toBe(3);
    const first = report.shown_examples[0]!;
    expect(await examples.first().locator('figcaption').textContent()).toBe(`Line ${first.line}`);
    const trained = first.segments.filter((segment) => segment.trained).map((segment) => segment.text);
    expect(await examples.first().locator('mark.trained').allTextContents()).toEqual(trained);
    expect(await examples.first().locator('.context').count()).toBeGreaterThan(0);
    await screenshot(page, 'file-report');

    // Counting with OpenAI's tokenizer only: the choice goes into the address and the report follows.
    await page.getByLabel('Count with').selectOption({ label: "OpenAI's tokenizer only" });
    await page.getByText('Billing tokens (cl100k_base)').waitFor();
    expect(page.url()).toContain('model=');
    await page.getByText('Choose a base model to see examples').waitFor();

    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByLabel('Count with').selectOption(BASE_MODEL);
    await page.getByText(`Billing tokens (${BASE_MODEL})`).waitFor();
    // Nothing wider than the phone's screen but the tables, which scroll in their own boxes.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'file-report-narrow');
    await page.close();
  });

  it('shows a malformed file dropped on the page with its errors by line, and the server refusing a file that is not JSONL', async () => {
    const page = await openDashboard(browser, t, '#/files');
    await page.getByText('Drop a JSONL file here, or choose one').waitFor();
    await dropFile(page, 'notes.txt', 'not a dataset\n');
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/'notes\.txt' is not JSON lines/);

    await dropFile(page, 'sports-headlines-as-printed.jsonl', fs.readFileSync(dataset('sports-headlines-as-printed.jsonl'), 'utf8'));
    const fileId = await fileIdOf(page);
    await page.getByText('cannot train', { exact: true }).waitFor();
    const report = await apiReport(fileId);
    const rows = page.locator('table.findings').first().locator('tbody tr');
    expect(await rows.count()).toBe(report.errors.length);
    const jsonErrors = report.errors.filter((error) => error.category === 'invalid_json');
    expect(jsonErrors.map((error) => error.line)).toEqual([1, 2]);
    for (const error of jsonErrors) {
      const row = rows.filter({ has: page.getByRole('cell', { name: String(error.line), exact: true }) });
      expect(await row.locator('td.problem').textContent()).toBe(error.message);
    }
    expect(await page.getByRole('list', { name: 'Errors by category' }).textContent()).toContain('invalid json: 2');
    await screenshot(page, 'file-errors');
    await page.close();
  });

  it('shows screening flags, warnings past the listed ones, and histograms of wide ranges', async () => {
    // 30 examples without a system message, of growing length; an e-mail address (warned) and a card number (blocked).
    const examples = Array.from({ length: 30 }, (_, i) => ({
      messages: [
        { role: 'user', content: i === 3 ? 'Write to ada@example.com about the weather.' : `Question ${i}: how is the weather?` },
        { role: 'assistant', content: i === 8 ? 'Pay with 4111 1111 1111 1111.' : 'Sunny and mild. '.repeat(1 + i * i) },
      ],
    }));
    const file = await t.client.files.create({
      file: await toFile(Buffer.from(examples.map((example) => JSON.stringify(example)).join('\n')), 'flagged.jsonl'),
      purpose: 'fine-tune',
    });
    const report = await apiReport(file.id);
    expect(report.screening.flagged_lines).toEqual([9]);
    const page = await openDashboard(browser, t, `#/files/${file.id}`);
    await page.getByText('cannot train', { exact: true }).waitFor();
    expect(await page.locator('.verdict').textContent()).toContain(report.screening.message!);
    const screening = page.getByRole('list', { name: 'Screening flags by category' });
    expect(await screening.textContent()).toContain('email: 1');
    expect(await screening.textContent()).toContain('payment card: 1');
    expect(await page.getByRole('list', { name: 'Warnings by category' }).textContent()).toContain('missing system message: 30');
    await page.getByText(`The first ${report.warnings.length} are listed`).waitFor();

    const totals = report.token_counts[BASE_MODEL]!.distributions.total_tokens!.histogram;
    expect(totals.length).toBeGreaterThan(10);
    expect(totals[0]!.to).toBeGreaterThan(totals[0]!.from);
    const bars = page.locator('figure.histogram').filter({ hasText: 'Total tokens per example' }).locator('.histogram-bar');
    expect(await bars.count()).toBe(totals.length);
    await screenshot(page, 'file-flagged');
    await page.close();
  });

  it('lists the files with their size and status, and deletes one once confirmed', async () => {
    const kept = await t.client.files.create({ file: fs.createReadStream(dataset('marv.jsonl')), purpose: 'fine-tune' });
    const doomed = await t.client.files.create({ file: fs.createReadStream(dataset('sports-headlines.jsonl')), purpose: 'fine-tune' });
    // Checked seconds after upload, as OpenAI's files are.
    await expect.poll(async () => (await t.client.files.retrieve(doomed.id)).status).toBe('processed');
    const page = await openDashboard(browser, t, '#/files');
    const row = page.getByRole('row').filter({ hasText: doomed.id });
    await row.waitFor();
    expect(await row.textContent()).toContain('sports-headlines.jsonl');
    expect(await row.textContent()).toContain('fine-tune');
    expect(await row.textContent()).toContain('processed');
    await screenshot(page, 'files');
    // The drop zone is reached with the keyboard: its file input is the first stop after the header.
    await page.getByRole('button', { name: 'Sign out' }).focus();
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => (document.activeElement as HTMLInputElement | null)?.type)).toBe('file');
    await page.setViewportSize({ width: 390, height: 844 });
    // On a phone the rows are cards: nothing to scroll sideways, every delete button on screen.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    const button = await row.getByRole('button', { name: 'Delete sports-headlines.jsonl' }).boundingBox();
    expect(button!.x + button!.width).toBeLessThanOrEqual(390);
    await screenshot(page, 'files-narrow');

    // Dismissed: nothing happens.
    page.once('dialog', (dialog) => dialog.dismiss());
    await row.getByRole('button', { name: 'Delete sports-headlines.jsonl' }).click();
    await expect(t.client.files.retrieve(doomed.id)).resolves.toMatchObject({ id: doomed.id });

    page.once('dialog', (dialog) => dialog.accept());
    await row.getByRole('button', { name: 'Delete sports-headlines.jsonl' }).click();
    await row.waitFor({ state: 'detached' });
    await expect(t.client.files.retrieve(doomed.id)).rejects.toMatchObject({ status: 404 });
    await page.getByRole('row').filter({ hasText: kept.id }).waitFor();

    // And from the file's own page, which goes back to the list.
    await page.goto(page.url().replace(/#.*$/, `#/files/${kept.id}`));
    await page.getByRole('heading', { name: 'marv.jsonl' }).waitFor();
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download' }).click()]);
    expect(download.suggestedFilename()).toBe('marv.jsonl');
    expect(fs.readFileSync((await download.path())!)).toEqual(Buffer.from(await (await t.client.files.content(kept.id)).arrayBuffer()));
    page.once('dialog', (dialog) => dialog.accept());
    await page.getByRole('button', { name: 'Delete file' }).click();
    await page.waitForURL(/#\/files$/);
    await expect(t.client.files.retrieve(kept.id)).rejects.toMatchObject({ status: 404 });
    await page.close();
  });
});
