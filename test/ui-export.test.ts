import type { Browser } from 'playwright-core';
import * as tar from 'tar';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { launchBrowser, openDashboard } from './support/browser.js';
import { type TestServer, finished, startTestServer, weatherJokes } from './support/server.js';

let t: TestServer;
let browser: Browser;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true });
  browser = await launchBrowser();
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
});

it("exports a job's fine-tune from its page and downloads the archive; a refused export says why", async () => {
  const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
  const job = await finished(t.client, (await t.client.fineTuning.jobs.create({ model: TINY_MODEL_NAME, training_file: file.id })).id, 300_000);
  const page = await openDashboard(browser, t, `#/jobs/${job.id}`);
  await page.getByLabel('Export format').selectOption({ label: 'Merged weights (Hugging Face)' });
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  const button = page.getByRole('button', { name: /^Download .*-merged\.tar\.gz$/ });
  await button.waitFor({ timeout: 120_000 });
  const [download] = await Promise.all([page.waitForEvent('download'), button.click()]);
  expect(download.suggestedFilename()).toMatch(/-merged\.tar\.gz$/);
  const entries: string[] = [];
  await tar.t({ file: (await download.path())!, onReadEntry: (entry) => entries.push(entry.path.split('/').slice(1).join('/')) });
  expect(entries.filter(Boolean).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

  // A full fine-tune has no adapter: the refusal is shown where the export was asked.
  await page.getByLabel('Export format').selectOption({ label: 'LoRA adapter (PEFT)' });
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  await expect.poll(() => page.getByRole('alert').textContent()).toContain('full fine-tune');
}, 400_000);
