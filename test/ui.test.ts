import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardURL, launchBrowser, openDashboard, screenshot } from './support/browser.js';
import { type TestServer, startTestServer, weatherJokes } from './support/server.js';

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

describe('the dashboard', () => {
  it('is served at /ui/ without fetching anything from elsewhere, and signs in with an API key', async () => {
    const page = await browser.newPage();
    const elsewhere: string[] = [];
    page.on('request', (request) => {
      if (!request.url().startsWith(new URL(t.server.baseURL).origin) && !request.url().startsWith('data:')) elsewhere.push(request.url());
    });
    const response = await page.goto(new URL('/', t.server.baseURL).href);
    expect(page.url()).toBe(`${dashboardURL(t)}`);
    expect(response!.headers()['content-security-policy']).toContain("connect-src 'self'");
    await page.getByLabel('API key').fill('sk-not-a-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/Incorrect API key/);
    await screenshot(page, 'sign-in');

    await page.getByLabel('API key').fill(t.apiKey);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Fine-tuning jobs' }).waitFor();
    expect(elsewhere).toEqual([]);
    await page.close();
  });

  it('lists the jobs of the organization, filtered by status', async () => {
    const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
    // No engine slots here: the job stays queued once its file is checked, or validating before that.
    const job = await t.client.fineTuning.jobs.create({ model: 'tiny-qwen3', training_file: file.id, suffix: 'listed' });
    const page = await openDashboard(browser, t);
    const row = page.getByRole('row').filter({ hasText: job.id });
    await row.waitFor();
    expect(await row.textContent()).toContain('tiny-qwen3');
    expect(await row.textContent()).toContain('listed');
    await screenshot(page, 'jobs');
    // On a phone each job is a card: every column still there, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    const trainedTokens = await row.locator('td[data-label="Trained tokens"]').boundingBox();
    expect(trainedTokens!.x + trainedTokens!.width).toBeLessThanOrEqual(390);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await screenshot(page, 'jobs-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });

    await page.getByLabel('Status').selectOption('succeeded');
    await page.getByText('No succeeded jobs.').waitFor();
    expect(page.url()).toContain('status=succeeded');
    await page.close();
  });

  it('is reachable by keyboard: a skip link first, then the sections, and sign-out asks for a key again', async () => {
    const page = await openDashboard(browser, t);
    await page.getByRole('heading', { name: 'Fine-tuning jobs' }).waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to content');
    await page.keyboard.press('Enter');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('main');
    expect(page.url()).toMatch(/#\/jobs$/);
    await page.getByRole('link', { name: 'Skip to content' }).focus();
    const focused: string[] = [];
    for (let i = 0; i < 8; i++) {
      await page.keyboard.press('Tab');
      focused.push((await page.evaluate(() => document.activeElement?.textContent)) ?? '');
    }
    // The server's first key is an administrator's: it is offered the Workers page.
    expect(focused).toEqual(['tunelab', 'Jobs', 'Files', 'Models', 'Playground', 'Usage', 'Workers', 'Sign out']);
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Usage' }).waitFor();
    expect(page.url()).toMatch(/#\/usage$/);

    await page.getByRole('button', { name: 'Sign out' }).focus();
    await page.keyboard.press('Enter');
    await page.getByLabel('API key').waitFor();
    await page.close();
  });

  it("offers the Workers page to administrators' keys only, and tells another key why it is not theirs", async () => {
    const { key } = await t.server.services.orgs.createKey('guests');
    expect(await t.clientFor(key).get('/organization')).toMatchObject({ object: 'organization', name: 'guests', administrator: false });
    expect(await t.client.get('/organization')).toMatchObject({ object: 'organization', name: 'personal', administrator: true });

    const page = await openDashboard(browser, t, '#/jobs', undefined, key);
    await page.getByRole('heading', { name: 'Fine-tuning jobs' }).waitFor();
    await page.getByRole('link', { name: 'Skip to content' }).focus();
    const focused: string[] = [];
    for (let i = 0; i < 7; i++) {
      await page.keyboard.press('Tab');
      focused.push((await page.evaluate(() => document.activeElement?.textContent)) ?? '');
    }
    expect(focused).toEqual(['tunelab', 'Jobs', 'Files', 'Models', 'Playground', 'Usage', 'Sign out']);

    // Its address typed in: the page says who may see it, and asks the server nothing it would refuse.
    const refused: string[] = [];
    page.on('response', (response) => {
      if (response.status() === 403) refused.push(response.url());
    });
    await page.goto(`${dashboardURL(t)}#/workers`);
    await page.getByRole('heading', { name: 'Workers' }).waitFor();
    expect(await page.getByRole('alert').textContent()).toMatch(/Only administrators see the workers.*"guests"/);
    expect(refused).toEqual([]);
    await screenshot(page, 'workers-not-administrator');
    await page.close();
  });
});
