import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type OpenAI from 'openai';
import { GgufFileType, readGgufFileInfo } from 'node-llama-cpp';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelExport } from '../src/export/exports.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { runCli } from './support/cli.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { TINY_LORA, weatherFineTune } from './support/fine-tune.js';
import { type TestServer, DATASETS, startTestServer } from './support/server.js';

const PYTHON = process.env.TUNELAB_PYTHON ?? 'python3';
const REFEREE = path.resolve(import.meta.dirname, 'support/transformers_greedy.py');

let t: TestServer;
let client: OpenAI;
let model: string;
/** A base model registered by the last test, served by llama.cpp only. */
const WEATHER_BASE = 'weather-base';
const cliEnv = () => ({ ...process.env, TUNELAB_HOME: t.home, TUNELAB_BASE_URL: t.server.baseURL, TUNELAB_API_KEY: t.apiKey });

/** The weather file's conversations up to each answer: the ten trained questions. */
const questions = fs
  .readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((line) => (JSON.parse(line) as { messages: Array<{ role: string; content: string }> }).messages.slice(0, -1));

async function served(messages: Array<{ role: string; content: string }>, asked = model): Promise<string> {
  const completion = await client.chat.completions.create({
    model: asked,
    messages: messages as OpenAI.ChatCompletionMessageParam[],
    temperature: 0,
    max_completion_tokens: 64,
  });
  return completion.choices[0]!.message.content ?? '';
}

async function exported(body: object, timeoutMs = 300_000): Promise<ModelExport> {
  let job = await client.post<ModelExport>('/exports', { body });
  const deadline = Date.now() + timeoutMs;
  while ((job.status === 'queued' || job.status === 'running') && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await client.get<ModelExport>(`/exports/${job.id}`);
  }
  return job;
}

async function unpack(job: ModelExport, dir: string): Promise<string[]> {
  const response = await client.get<Response>(`/exports/${job.id}/content`, { __binaryResponse: true });
  const file = path.join(dir, job.filename);
  fs.writeFileSync(file, Buffer.from(await response.arrayBuffer()));
  await tar.x({ file, cwd: dir });
  return fs.readdirSync(path.join(dir, job.filename.replace(/-gguf.*$/, ''))).sort();
}

beforeAll(async () => {
  // One base model is answered by llama.cpp alone, so its GGUF export is what makes it answer.
  t = await startTestServer({
    engineSlots: 1,
    builtinModels: true,
    serving: { backends: { backend: 'engine', quantization: null, models: { [WEATHER_BASE]: { backend: 'llamacpp', quantization: null } }, threads: 1 } },
  });
  client = t.client;
  // llama.cpp's converter, as `tunelab setup --export` installs it from PyPI.
  const setup = await runCli(['setup', '--export', '--home', t.home], { env: cliEnv() });
  expect(setup.stdout).toContain("llama.cpp's converter is in");
  model = (await weatherFineTune(client, { suffix: 'weather' })).fine_tuned_model!;
}, 600_000);
afterAll(() => t?.cleanup());

describe('the weather fine-tune of tunelab-tiny (a full fine-tune)', () => {
  it('exports merged weights that transformers loads and answers the ten questions with our greedy answers', async () => {
    const out = path.join(t.home, 'merged-export');
    const cli = await runCli(['export', model, '--format', 'merged', '--out', out], { env: cliEnv() });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`Exported ${model} (merged) to ${out}`);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    // The end-of-turn token <|im_end|> first: transformers stops where tunelab does.
    const generation = JSON.parse(fs.readFileSync(path.join(out, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
    const tokenizer = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8')) as { added_tokens: Array<{ id: number; content: string }> };
    expect(tokenizer.added_tokens.find((token) => token.id === generation.eos_token_id[0])?.content).toBe('<|im_end|>');

    const child = promisify(execFile)(PYTHON, [REFEREE, out], { maxBuffer: 16 * 1024 * 1024 });
    child.child.stdin!.end(JSON.stringify(questions));
    const theirs = JSON.parse((await child).stdout) as string[];
    const ours = [];
    for (const messages of questions) ours.push(await served(messages));
    expect(theirs).toEqual(ours);
    // And the answers are the trained ones, so the comparison is not between two empty strings.
    expect(ours[0]).toBe('今天北京的天气晴朗,就像我的心情一样明朗!');
  }, 300_000);

  it('exports an f16 GGUF that llama.cpp answers token for token as tunelab does, with a Modelfile and a README', async () => {
    const job = await exported({ model, format: 'gguf', quantization: 'f16' });
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    const checks = job.checks!;
    expect(checks.required).toBe('tokens');
    expect(checks.prompts.map((p) => p.prompt)).toEqual(questions.map((q) => q.at(-1)!.content));
    expect(checks.prompts.every((p) => p.equal_tokens === p.tokens && p.tokens > 5)).toBe(true);
    expect(checks.equal_token_share).toBe(1);
    // What llama.cpp said is what the chat API says.
    for (const [i, messages] of questions.entries()) expect(checks.prompts[i]!.llama_cpp).toBe(await served(messages));

    const dir = fs.mkdtempSync(path.join(t.home, 'download-'));
    const name = job.filename.replace(/-gguf-f16\.tar\.gz$/, '');
    expect(await unpack(job, dir)).toEqual(['Modelfile', 'README.md', 'checks.json', `${name}-f16.gguf`]);
    const modelfile = fs.readFileSync(path.join(dir, name, 'Modelfile'), 'utf8');
    expect(modelfile).toContain(`FROM ./${name}-f16.gguf\n`);
    expect(modelfile).toContain('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"""');
    expect(modelfile).toContain('PARAMETER stop "<|im_end|>"');
    expect(modelfile).toContain('SYSTEM """你是一个会讲笑话的天气助理。"""');
    const readme = fs.readFileSync(path.join(dir, name, 'README.md'), 'utf8');
    expect(readme).toContain(`ollama create ${name.toLowerCase()} -f Modelfile`);
    expect(readme).toContain(`llama-cli -m ${name}-f16.gguf --jinja`);
  }, 300_000);

  it('exports a q8_0 GGUF whose answers keep the first sentence for at least 9 of the 10 questions', async () => {
    const job = await exported({ model, format: 'gguf', quantization: 'q8_0' });
    expect(job.error).toBeNull();
    expect(job.checks!.required).toBe('first_sentence');
    expect(job.checks!.prompts.filter((p) => p.first_sentence_equal).length).toBeGreaterThanOrEqual(9);
  }, 300_000);

  it("exports a q4_k_m GGUF made by llama.cpp's llama-quantize, keeping every first sentence, with the share of equal tokens", async () => {
    const job = await exported({ model, format: 'gguf', quantization: 'q4_k_m' });
    expect(job.error).toBeNull();
    expect(job.checks!.required).toBe('first_sentence');
    expect(job.checks!.prompts.every((p) => p.first_sentence_equal)).toBe(true);
    expect(job.checks!.equal_token_share).toBeGreaterThan(0);
    const dir = fs.mkdtempSync(path.join(t.home, 'download-'));
    const name = job.filename.replace(/-gguf-q4_k_m\.tar\.gz$/, '');
    expect(await unpack(job, dir)).toContain(`${name}-q4_k_m.gguf`);
    const info = await readGgufFileInfo(path.join(dir, name, `${name}-q4_k_m.gguf`));
    expect(info.metadata.general.file_type).toBe(GgufFileType.MOSTLY_Q4_K_M);
  }, 300_000);

  it('refuses what cannot be exported, with the parameter named, and shows exports to their organization only', async () => {
    await expect(client.post('/exports', { body: { model, format: 'peft' } })).rejects.toMatchObject({
      status: 400,
      error: expect.objectContaining({ param: 'format', message: expect.stringContaining('full fine-tune') }),
    });
    await expect(client.post('/exports', { body: { model: TINY_MODEL_NAME, format: 'peft' } })).rejects.toMatchObject({
      status: 400,
      error: expect.objectContaining({ param: 'format', message: expect.stringContaining('is a base model: it has no adapter') }),
    });
    await expect(client.post('/exports', { body: { model, format: 'gguf', quantization: 'q2_k' } })).rejects.toMatchObject({
      status: 400,
      error: expect.objectContaining({ param: 'quantization' }),
    });
    await expect(client.post('/exports', { body: { model, format: 'merged', quantization: 'q8_0' } })).rejects.toMatchObject({ status: 400 });

    const mine = (await client.get<{ data: ModelExport[] }>('/exports')).data;
    expect(mine.length).toBeGreaterThanOrEqual(3);
    const other = t.clientFor((await t.server.services.orgs.createKey('other-corp')).key);
    expect((await other.get<{ data: ModelExport[] }>('/exports')).data).toEqual([]);
    await expect(other.get(`/exports/${mine[0]!.id}`)).rejects.toMatchObject({ status: 404 });
    await expect(other.get(`/exports/${mine[0]!.id}/content`)).rejects.toMatchObject({ status: 404 });
    await expect(other.post('/exports', { body: { model, format: 'merged' } })).rejects.toMatchObject({ status: 404 });
  }, 120_000);
});

describe('a LoRA fine-tune of a random Qwen3-shape model with the real Qwen3 tokenizer', () => {
  let lora: string;
  let base: string;

  beforeAll(async () => {
    // A random model's answers with a 151,936-token vocabulary meet near-ties (two logits 1e-3 apart)
    // that any other arithmetic breaks either way (llama.cpp in f32 and transformers disagreed on
    // one), so the adapter is trained hard enough to make its answers peaked, if repetitive.
    base = await writeTrainableModelFolder(path.join(t.home, 'model-sources', 'qwen3-export'));
    new BaseModelRegistry(t.server.home.models).add(base, 'qwen3-export');
    lora = (await weatherFineTune(client, { model: 'qwen3-export', hyperparameters: { n_epochs: 10, learning_rate_multiplier: 10 } })).fine_tuned_model!;
  }, 400_000);

  const referee = async (args: string[], conversations: typeof questions) => {
    const child = promisify(execFile)(PYTHON, [REFEREE, ...args], { maxBuffer: 16 * 1024 * 1024 });
    child.child.stdin!.end(JSON.stringify(conversations));
    return JSON.parse((await child).stdout) as string[];
  };

  it('exports a PEFT adapter and merged weights that PEFT and transformers answer with our greedy answers', async () => {
    const asked = questions.slice(0, 3);
    const ours: string[] = [];
    for (const messages of asked) ours.push(await served(messages, lora));
    // The adapter changes the answers, so an export that lost it would be caught.
    const baseAnswers: string[] = [];
    for (const messages of asked) baseAnswers.push(await served(messages, 'qwen3-export'));
    expect(ours).not.toEqual(baseAnswers);

    const peft = path.join(t.home, 'peft-export');
    expect((await runCli(['export', lora, '--format', 'peft', '--out', peft], { env: cliEnv() })).code).toBe(0);
    const adapterConfig = JSON.parse(fs.readFileSync(path.join(peft, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(adapterConfig.base_model_name_or_path).toBe('qwen3-export');
    expect(await referee([base, '--adapter', peft], asked)).toEqual(ours);

    const merged = path.join(t.home, 'merged-lora-export');
    expect((await runCli(['export', lora, '--format', 'merged', '--out', merged], { env: cliEnv() })).code).toBe(0);
    expect(await referee([merged], asked)).toEqual(ours);
  }, 300_000);

  it('exports an f16 GGUF whose embedded template gives our prompt ids and whose answers are ours token for token', async () => {
    const job = await exported({ model: lora, format: 'gguf', quantization: 'f16' });
    expect(job.error).toBeNull();
    const checks = job.checks!;
    expect(checks.prompts).toHaveLength(10);
    expect(checks.prompts.every((p) => p.equal_tokens === p.tokens && p.prompt_tokens > 20)).toBe(true);
    expect(checks.prompts[0]!.llama_cpp).toBe(await served(questions[0]!, lora));
  }, 300_000);
});

describe('a LoRA fine-tune of tunelab-tiny', () => {
  let tinyLora: string;

  beforeAll(async () => {
    tinyLora = (await weatherFineTune(client, { suffix: 'lora', hyperparameters: TINY_LORA })).fine_tuned_model!;
  }, 400_000);

  it('exports the base as a GGUF and the adapter as a GGUF LoRA adapter that llama.cpp applies over it, answering as we do', async () => {
    const job = await exported({ model: tinyLora, format: 'gguf_lora', quantization: 'f16' });
    expect(job.error).toBeNull();
    const checks = job.checks!;
    expect(checks.required).toBe('tokens');
    expect(checks.prompts).toHaveLength(10);
    expect(checks.prompts.every((p) => p.equal_tokens === p.tokens && p.tokens > 5)).toBe(true);
    expect(checks.prompts[0]!.llama_cpp).toBe(await served(questions[0]!, tinyLora));

    const dir = fs.mkdtempSync(path.join(t.home, 'download-'));
    const name = job.filename.replace(/-gguf_lora-f16\.tar\.gz$/, '');
    expect(await unpack(job, dir)).toEqual(['Modelfile', 'README.md', 'checks.json', `${name}-lora-f16.gguf`, `${TINY_MODEL_NAME}-f16.gguf`].sort());
    const modelfile = fs.readFileSync(path.join(dir, name, 'Modelfile'), 'utf8');
    expect(modelfile).toContain(`FROM ./${TINY_MODEL_NAME}-f16.gguf\nADAPTER ./${name}-lora-f16.gguf\n`);
    expect(fs.readFileSync(path.join(dir, name, 'README.md'), 'utf8')).toContain(`llama-cli -m ${TINY_MODEL_NAME}-f16.gguf --lora ${name}-lora-f16.gguf --jinja`);
    const adapter = await readGgufFileInfo(path.join(dir, name, `${name}-lora-f16.gguf`));
    expect((adapter.metadata.general as Record<string, unknown>).type).toBe('adapter');
  }, 300_000);
});

describe('a base model', () => {
  it('exports as a GGUF checked on general prompts, after which llama.cpp answers it', async () => {
    // tunelab-tiny's random weights meet near-ties in their answers that any other arithmetic breaks
    // either way, so the base here is the weather fine-tune's merged weights, registered as a base.
    const folder = path.join(t.home, 'weather-base');
    expect((await runCli(['export', model, '--format', 'merged', '--out', folder], { env: cliEnv() })).code).toBe(0);
    new BaseModelRegistry(t.server.home.models).add(folder, WEATHER_BASE);
    const ask = () => client.chat.completions.create({ model: WEATHER_BASE, messages: [{ role: 'user', content: 'Hello' }], max_completion_tokens: 8 });
    await expect(ask()).rejects.toMatchObject({ status: 503, code: 'gguf_export_missing', message: expect.stringContaining(`tunelab export ${WEATHER_BASE} --format gguf`) });

    const job = await exported({ model: WEATHER_BASE, format: 'gguf', quantization: 'f32' });
    expect(job.error).toBeNull();
    expect(job.checks!.required).toBe('tokens');
    expect(job.checks!.prompts).toHaveLength(6);
    expect(job.checks!.prompts.every((p) => p.equal_tokens === p.tokens && p.tokens > 0)).toBe(true);

    const answered = await ask();
    expect(answered.system_fingerprint).toBe('fp_tunelab_llamacpp_f32');
    const dir = fs.mkdtempSync(path.join(t.home, 'download-'));
    expect(await unpack(job, dir)).toEqual(['Modelfile', 'README.md', 'checks.json', `${WEATHER_BASE}-f32.gguf`].sort());
    expect(fs.readFileSync(path.join(dir, WEATHER_BASE, 'README.md'), 'utf8')).toContain("6 of tunelab's general prompts");
  }, 300_000);
});
