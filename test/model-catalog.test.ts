import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { writeModelFolder } from './support/model-folder.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { DATASETS, startTestServer, tempHome, weatherJokes } from './support/server.js';

const home = tempHome();
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

describe('tunelab models catalog', () => {
  it('lists the recommended models, and asks for a measurement before it estimates times', async () => {
    const listed = await runCli(['models', 'catalog', '--home', home]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/Qwen\/Qwen2\.5-0\.5B-Instruct\s+qwen2\s+494M\s+1\.0 GB\s+apache-2\.0\s+-/);
    expect(listed.stdout).toMatch(/meta-llama\/Llama-3\.1-8B-Instruct\s+llama\s+8\.0B\s+16\.1 GB\s+llama3\.1 \(gated\)/);
    expect(listed.stdout).toContain('run `tunelab models catalog --measure`');
  });

  it("scales this host's measured speed by each model's parameters", async () => {
    // As `--measure` leaves it: 500 tokens/s on a 100M-parameter model.
    const measured = { tokensPerSecond: 500, parameters: 100e6, shape: 'smollm2-135m', measuredAt: 0, cpu: 'test', cores: 2 };
    fs.writeFileSync(path.join(home, 'engine-throughput.json'), JSON.stringify(measured));
    const { stdout } = await runCli(['models', 'catalog', '--home', home, '--json']);
    const catalog = JSON.parse(stdout) as { models: { repo: string; secondsPer1kTokens: number }[] };
    const time = (repo: string) => catalog.models.find((m) => m.repo === repo)!.secondsPer1kTokens;
    // 2 s per 1K tokens per 100M parameters.
    expect(time('Qwen/Qwen2.5-0.5B-Instruct')).toBeCloseTo(9.9, 1);
    expect(time('Qwen/Qwen3-8B')).toBeCloseTo(163.8, 1);
  });
});

/** A 100M-parameter model: the header says so, and the file has that size (sparse: nothing is written). */
function writeHundredMillionModel(folder: string): string {
  writeModelFolder(folder);
  const bytes = 4 * 100e6;
  const header = Buffer.from(JSON.stringify({ 'model.embed_tokens.weight': { dtype: 'F32', shape: [100e6], data_offsets: [0, bytes] } }).padEnd(128, ' '));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(path.join(folder, 'model.safetensors'), Buffer.concat([length, header]));
  fs.truncateSync(path.join(folder, 'model.safetensors'), 8 + header.length + bytes);
  return folder;
}

describe('tunelab validate --model', () => {
  it("estimates the job's training time on this host from the measured speed", async () => {
    const folder = writeHundredMillionModel(path.join(home, 'hundred-million'));
    const file = path.join(DATASETS, 'weather-jokes.jsonl');

    const unmeasured = await runCli(['validate', file, '--model', folder, '--home', path.join(home, 'elsewhere')]);
    expect(unmeasured.stdout).toContain('Training time: run `tunelab models catalog --measure` once to have it estimated.');

    // 500 tokens/s on 100M parameters (written by the test above): 2 s per 1K tokens for this model.
    const json = await runCli(['validate', file, '--model', folder, '--home', home, '--json']);
    const report = JSON.parse(json.stdout) as { charged_tokens: number; estimated_duration_seconds: number };
    expect(report.estimated_duration_seconds).toBe(Math.round((2 * report.charged_tokens) / 1000));
    const text = await runCli(['validate', file, '--model', folder, '--home', home]);
    expect(text.stdout).toMatch(/Estimated training time on this host: [\d.]+ s with LoRA \(the engine's 500 tokens\/s measured on smollm2-135m/);
  });
});

describe('GET /v1/files/{id}/report?model=', () => {
  it("gives the job's training time on this server once its speed is measured", async () => {
    const t = await startTestServer();
    try {
      new BaseModelRegistry(t.server.home.models).add(writeHundredMillionModel(path.join(t.home, 'sources', 'hundred-million')), 'hundred-million');
      const file = await t.client.files.create({ file: weatherJokes(), purpose: 'fine-tune' });
      type Report = { charged_tokens: number; estimated_duration_seconds: number | null };
      const report = () => t.client.get<Report>(`/files/${file.id}/report`, { query: { model: 'hundred-million' } });
      expect((await report()).estimated_duration_seconds).toBeNull();

      fs.writeFileSync(path.join(t.home, 'engine-throughput.json'), JSON.stringify({ tokensPerSecond: 500, parameters: 100e6, shape: 'smollm2-135m', measuredAt: 0, cpu: 'test', cores: 2 }));
      const measured = await report();
      expect(measured.estimated_duration_seconds).toBe(Math.round((2 * measured.charged_tokens) / 1000));
    } finally {
      await t.cleanup();
    }
  });
});
