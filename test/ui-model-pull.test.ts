import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardURL, launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { repoFromFolder, startHub, type LoopbackHub } from './support/hub-server.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { type TestServer, startTestServer } from './support/server.js';

/** The Models page's Pull button, against a Hugging Face Hub on loopback. */
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tunelab-ui-pull-'));
let hub: LoopbackHub;
let t: TestServer;
let browser: Browser;
const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HOME: process.env.HF_HOME };

beforeAll(async () => {
  hub = await startHub([repoFromFolder('tunelab-test/Tiny-Qwen3', await writeTrainableModelFolder(path.join(root, 'tiny')))]);
  // The server reads the Hugging Face variables of its own process, as `tunelab serve` would.
  Object.assign(process.env, { HF_ENDPOINT: hub.url, HF_HOME: path.join(root, 'hf') });
  t = await startTestServer();
  browser = await launchBrowser();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
  await hub?.close();
  for (const [key, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  fs.rmSync(root, { recursive: true, force: true });
});

describe('the Models page', () => {
  it('pulls a model from the hub and lists it with its parameters and context', async () => {
    const page = await openDashboard(browser, t, '#/models');
    await page.getByLabel('Hugging Face model').fill('tunelab-test/Tiny-Qwen3');
    await page.getByLabel('Name (optional)').fill('tiny-from-ui');
    await page.getByRole('button', { name: 'Pull' }).click();
    await page.getByText('Pulled tunelab-test/Tiny-Qwen3: it is the base model tiny-from-ui.').waitFor({ timeout: 60_000 });
    const row = page.getByRole('table', { name: 'Base models' }).getByRole('row').filter({ hasText: 'tiny-from-ui' });
    await expect.poll(() => row.textContent()).toMatch(/tiny-from-ui.*M float32.*2,048/);
    await screenshot(page, 'models-pulled');
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'models-pulled-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });

    // A mistyped repository: the hub's answer, in words.
    await page.getByLabel('Hugging Face model').fill('tunelab-test/No-Such-Model');
    await page.getByLabel('Name (optional)').fill('');
    await page.getByRole('button', { name: 'Pull' }).click();
    await page.getByRole('alert').filter({ hasText: 'tunelab-test/No-Such-Model (or that revision) does not exist' }).waitFor();
  });

  it('offers no Pull to a key whose organization may not add base models', async () => {
    const { key } = await t.server.services.orgs.createKey('guests');
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.addInitScript((apiKey) => localStorage.setItem('tunelab.apiKey', apiKey), key);
    await page.goto(`${dashboardURL(t)}#/models`);
    await page.getByRole('table', { name: 'Base models' }).waitFor();
    expect(await page.getByRole('button', { name: 'Pull' }).count()).toBe(0);
  });
});
