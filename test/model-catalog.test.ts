import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from './support/cli.js';
import { tempHome } from './support/server.js';

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
