import fs from 'node:fs';
import path from 'node:path';
import { type Browser, type Page, chromium } from 'playwright-core';
import type { TestServer } from './server.js';

/** Debian's Chromium (apt-get install chromium); CHROMIUM names another. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** Where the UI tests leave a screenshot of each page, to be looked at. */
export const SCREENSHOTS = path.resolve(import.meta.dirname, '../../test-results/ui');

export function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`The dashboard's tests drive Chromium, and there is none at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM.`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container has no sandbox; the rest keeps Chromium from reaching out or waking up on its own.
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-sync',
      '--disable-component-update',
      '--disable-default-apps',
      '--no-first-run',
    ],
  });
}

/** A page of the dashboard, already signed in with the server's first key (an administrator's), or with `apiKey`. */
export async function openDashboard(
  browser: Browser,
  t: TestServer,
  hash = '#/jobs',
  viewport = { width: 1280, height: 900 },
  apiKey = t.apiKey,
): Promise<Page> {
  const page = await browser.newPage({ viewport, colorScheme: 'light' });
  await page.addInitScript((key) => localStorage.setItem('tunelab.apiKey', key), apiKey);
  await page.goto(`${dashboardURL(t)}${hash}`);
  return page;
}

export const dashboardURL = (t: TestServer) => new URL('/ui/', t.server.baseURL).href;

export async function screenshot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}
