import type { Browser, Page } from 'playwright-core';
import * as tar from 'tar';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { launchBrowser, openDashboard } from './support/browser.js';
import { runCli } from './support/cli.js';
import { weatherFineTune } from './support/fine-tune.js';
import { type TestServer, startTestServer } from './support/server.js';

let t: TestServer;
let browser: Browser;
let job: Awaited<ReturnType<typeof weatherFineTune>>;

beforeAll(async () => {
  // `auto`, as `tunelab serve` on a host without a GPU: a model with a GGUF export is answered by
  // llama.cpp (one thread: its threads spin while they wait, slow on a machine running tests).
  t = await startTestServer({
    engineSlots: 1,
    builtinModels: true,
    serving: { backends: { backend: 'auto', quantization: null, models: {}, threads: 1 } },
  });
  browser = await launchBrowser();
  job = await weatherFineTune(t.client);
}, 400_000);
afterAll(async () => {
  await browser?.close();
  await t?.cleanup();
});

/** Exports the job's fine-tune from its page in `format` (the menu's label) and waits for the download button. */
async function exportFromJobPage(page: Page, format: string, archive: RegExp) {
  await page.getByLabel('Export format').selectOption({ label: format });
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  const button = page.getByRole('button', { name: archive });
  await button.waitFor({ timeout: 240_000 });
  return button;
}

it("exports a job's fine-tune from its page and downloads the archive; a refused export says why", async () => {
  const page = await openDashboard(browser, t, `#/jobs/${job.id}`);
  const button = await exportFromJobPage(page, 'Merged weights (Hugging Face)', /^Download .*-merged\.tar\.gz$/);
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

it('offers a base model GGUF exports only, on the models page', async () => {
  const page = await openDashboard(browser, t, '#/models');
  const formats = page.getByLabel(`Export format of ${TINY_MODEL_NAME}`);
  await formats.waitFor();
  expect(await formats.locator('option').allTextContents()).toEqual([
    'GGUF f16 (llama.cpp, Ollama)',
    'GGUF q8_0 (llama.cpp, Ollama)',
    'GGUF q4_k_m (llama.cpp, Ollama)',
  ]);
});

it('says in the playground which backend answered: the engine, then llama.cpp once a GGUF export has succeeded', async () => {
  const fineTune = job.fine_tuned_model!;
  const answeredBy = async () => {
    const page = await openDashboard(browser, t, `#/playground?left=${TINY_MODEL_NAME}&right=${encodeURIComponent(fineTune)}`);
    await expect.poll(() => page.getByLabel('Right model').inputValue()).toBe(fineTune);
    await page.getByLabel('Max tokens').fill('8');
    await page.getByLabel('Message').fill('今天北京天气怎么样?');
    await page.getByLabel('Message').press('Enter');
    const right = page.getByRole('region', { name: /^Right: / });
    await right.locator('.assistant[data-done="true"]').waitFor({ timeout: 60_000 });
    const said = (await right.getByText(/answered by/).textContent()) ?? '';
    await page.close();
    return said;
  };
  expect(await answeredBy()).toContain('answered by tunelab engine');

  const env = { ...process.env, TUNELAB_HOME: t.home, TUNELAB_BASE_URL: t.server.baseURL, TUNELAB_API_KEY: t.apiKey };
  expect((await runCli(['setup', '--export', '--home', t.home], { env })).code).toBe(0);
  const page = await openDashboard(browser, t, `#/jobs/${job.id}`);
  await exportFromJobPage(page, 'GGUF f16 (llama.cpp, Ollama)', /^Download .*-gguf-f16\.tar\.gz$/);
  await page.close();
  // The same server, not restarted: the export's success is seen by the next request.
  expect(await answeredBy()).toContain('answered by llama.cpp (f16)');
}, 600_000);
