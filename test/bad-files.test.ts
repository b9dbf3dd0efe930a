import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatasetReport } from '../src/datasets/doctor.js';
import type { DatasetError } from '../src/datasets/findings.js';
import { startsLikeJsonLines } from '../src/datasets/jsonl.js';
import { runCli } from './support/cli.js';
import { BASE_MODEL, type TestServer, startTestServer, validated } from './support/server.js';

/** The malformed-file corpus: each file with the exact errors the doctor must report. */
const CORPUS = path.resolve(import.meta.dirname, 'fixtures/bad');
interface Case {
  file: string;
  errors: Array<Pick<DatasetError, 'category' | 'line' | 'message_index' | 'field'>>;
}
const cases = JSON.parse(fs.readFileSync(path.join(CORPUS, 'expected.json'), 'utf8')) as Case[];

const located = (errors: readonly DatasetError[]) =>
  errors.map(({ category, line, message_index, field }) => ({ category, line, message_index, field }));
const sorted = <T extends { line: number | null; category: string }>(list: T[]) =>
  [...list].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.category.localeCompare(b.category));

describe('the malformed-file corpus', () => {
  it('has at least 40 files, each listed with its expected errors', () => {
    const files = fs.readdirSync(CORPUS).filter((name) => name.endsWith('.jsonl'));
    expect(files.length).toBeGreaterThanOrEqual(40);
    expect(cases.map((c) => c.file).sort()).toEqual(files.sort());
  });

  it('is rejected by `tunelab validate` with each error located: line, message, field', { timeout: 300_000 }, async () => {
    const mismatches: string[] = [];
    // Two at a time: one per core.
    const queue = [...cases];
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const result = await runCli(['validate', path.join(CORPUS, next.file), '--json']);
        const report = JSON.parse(result.stdout) as DatasetReport;
        if (result.code !== 1) mismatches.push(`${next.file}: exit ${result.code}`);
        const got = sorted(located(report.errors));
        if (JSON.stringify(got) !== JSON.stringify(sorted(next.errors))) mismatches.push(`${next.file}: ${JSON.stringify(got)}`);
        if (report.errors.some((error) => error.message.length < 10)) mismatches.push(`${next.file}: a reason too short to help`);
      }
    };
    await Promise.all([worker(), worker()]);
    expect(mismatches).toEqual([]);
  });
});

describe('the malformed-file corpus through fine-tuning jobs', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(() => t.cleanup());

  it('marks each file `error` naming the line, refuses a job on it with OpenAI\'s 400, and serves the report', { timeout: 300_000 }, async () => {
    for (const { file, errors } of cases) {
      const bytes = fs.readFileSync(path.join(CORPUS, file));
      if (bytes.length === 0 || !startsLikeJsonLines(bytes)) {
        // Refused before anything is stored: an empty file, or one that does not even open as JSON lines.
        await expect(t.client.files.create({ file: new File([bytes], file), purpose: 'fine-tune' }), file).rejects.toMatchObject({ status: 400, param: 'file' });
        continue;
      }
      const uploaded = await t.client.files.create({ file: new File([bytes], file), purpose: 'fine-tune' });
      const stored = await checked(t, uploaded.id);
      const formatErrors = errors.filter((error) => error.category !== 'invalid_n_examples');
      if (formatErrors.length === 0) {
        // The file is well formed; too few examples is the job's verdict.
        expect(stored.status, file).toBe('processed');
        const job = await validated(t.client, (await t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: uploaded.id })).id);
        expect(job.error, file).toMatchObject({ code: 'invalid_n_examples', param: 'training_file' });
        const report = await t.client.get<DatasetReport>(`/fine_tuning/jobs/${job.id}/validation_report`);
        expect(sorted(located(report.errors)), file).toEqual(sorted(errors));
        continue;
      }
      expect(stored, file).toMatchObject({ status: 'error', status_details: expect.stringMatching(/^Invalid file format\. /) });
      if (formatErrors.some((error) => error.line !== null)) expect(stored.status_details, file).toMatch(/^Invalid file format\. Line \d+/);
      await expect(t.client.fineTuning.jobs.create({ model: BASE_MODEL, training_file: uploaded.id }), file).rejects.toMatchObject({
        status: 400,
        param: 'training_file',
        code: 'invalid_training_file',
        message: expect.stringContaining(stored.status_details!),
      });
      const report = await t.client.get<DatasetReport>(`/files/${uploaded.id}/report`);
      expect(sorted(located(report.errors)), file).toEqual(sorted(errors));
    }
  });
});

/** The file once its upload check has given its verdict. */
async function checked(t: TestServer, id: string) {
  for (;;) {
    const file = await t.client.files.retrieve(id);
    if (file.status !== 'uploaded') return file;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
