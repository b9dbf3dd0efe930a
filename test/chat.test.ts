import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelExport } from '../src/export/exports.js';
import { BaseModelRegistry } from '../src/models/base-models.js';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { runCli } from './support/cli.js';
import { eventually } from './support/finish.js';
import { writeTrainableModelFolder } from './support/model-folder.js';
import { TINY_LORA, weatherFineTune } from './support/fine-tune.js';
import { DATASETS, type TestServer, startTestServer } from './support/server.js';

interface Example {
  prompt: ChatCompletionMessageParam[];
  answer: string;
}

const examples: Example[] = fs
  .readFileSync(path.join(DATASETS, 'weather-jokes.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((line) => {
    const messages = (JSON.parse(line) as { messages: Array<{ role: 'system' | 'user' | 'assistant'; content: string }> }).messages;
    return { prompt: messages.slice(0, -1), answer: messages.at(-1)!.content };
  });

const RANDOM_MODEL = 'random-qwen3';

/** The pid of the engine serving a base model, found by its command line. */
function servePid(model: string): number {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.includes('serve') && args.some((arg) => arg.endsWith(`/models/${model}`) && arg.startsWith(t.home))) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no engine serves ${model}`);
}

let t: TestServer;
let client: OpenAI;
let fineTune: string;
let loraTune: string;
let tokenizer: ModelTokenizer;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true, serving: { maxBatch: 8 } });
  client = t.client;
  new BaseModelRegistry(t.server.home.models).add(await writeTrainableModelFolder(path.join(t.home, 'random-qwen3')), RANDOM_MODEL);
  tokenizer = ModelTokenizer.load(path.join(t.server.home.models, TINY_MODEL_NAME));
  const [full, lora] = await Promise.all([
    weatherFineTune(client, { suffix: 'chat' }),
    weatherFineTune(client, { suffix: 'lora', hyperparameters: TINY_LORA }),
  ]);
  fineTune = full.fine_tuned_model!;
  loraTune = lora.fine_tuned_model!;
}, 600_000);
afterAll(() => t?.cleanup());

/**
 * Restarts the server with `model` served by llama.cpp (config.json's `serving.models`) on a GGUF
 * export of it, made as a user makes one: llama.cpp's converter installed, then an export.
 */
async function serveWithLlamaCpp(model: string, quantization: string): Promise<void> {
  const env = { ...process.env, TUNELAB_HOME: t.home, TUNELAB_BASE_URL: t.server.baseURL, TUNELAB_API_KEY: t.apiKey };
  expect((await runCli(['setup', '--export', '--home', t.home], { env })).code).toBe(0);
  let exported = await client.post<ModelExport>('/exports', { body: { model, format: 'gguf', quantization } });
  while (exported.status === 'queued' || exported.status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 500));
    exported = await client.get<ModelExport>(`/exports/${exported.id}`);
  }
  expect(exported.error).toBeNull();
  const configFile = path.join(t.home, 'config.json');
  const config = fs.existsSync(configFile) ? (JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>) : {};
  // One thread: llama.cpp's threads wait for each other spinning, which on a machine busier than
  // its cores (this one, running tests) makes two threads slower than one.
  config.serving = { threads: 1, models: { [model]: { backend: 'llamacpp', quantization } } };
  fs.writeFileSync(configFile, JSON.stringify(config));
  await t.stop();
  t = await startTestServer({ home: t.home, engineSlots: 1, builtinModels: true, serving: { maxBatch: 8 } });
  client = t.client;
}

const ask = (model: string, example: Example, extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) =>
  client.chat.completions.create({ model, messages: example.prompt, temperature: 0, ...extra });

describe('chat completions served by the engine', () => {
  it('a LoRA fine-tune is served over its base: base and adapter requests share a batch and get what each gets alone', async () => {
    const alone = [];
    for (const example of examples.slice(0, 4)) {
      alone.push((await ask(loraTune, example)).choices[0]!.message.content);
      alone.push((await ask(TINY_MODEL_NAME, example, { max_tokens: 20 })).choices[0]!.message.content);
    }
    expect(alone.filter((answer, i) => i % 2 === 0 && answer === examples[i / 2]!.answer).length).toBeGreaterThan(2);
    const together = await Promise.all(
      examples.slice(0, 4).flatMap((example) => [ask(loraTune, example), ask(TINY_MODEL_NAME, example, { max_tokens: 20 })]),
    );
    expect(together.map((r) => r.choices[0]!.message.content)).toEqual(alone);
    // One model server for both: the adapter is applied per row.
    expect(t.server.services.inference.status().filter((s) => s.modelDir.endsWith(TINY_MODEL_NAME))).toHaveLength(1);
  });

  it('checkpoint models answer too, in the style they were trained to by then', async () => {
    const checkpoints = (await client.fineTuning.jobs.checkpoints.list((await client.fineTuning.jobs.list()).data[0]!.id)).data;
    const earlier = checkpoints.find((c) => c.fine_tuned_model_checkpoint !== fineTune)!;
    const reply = await ask(earlier.fine_tuned_model_checkpoint, examples[2]!);
    expect(reply.model).toBe(earlier.fine_tuned_model_checkpoint);
    // Nine epochs in: it already stops by itself after a sentence about the weather.
    expect(reply.choices[0]!.finish_reason).toBe('stop');
    expect(reply.choices[0]!.message.content).toMatch(/^\p{Script=Han}.*的.*[!。]$/u);
    const base = await ask(TINY_MODEL_NAME, examples[2]!, { max_tokens: 40 });
    expect(reply.choices[0]!.message.content).not.toBe(base.choices[0]!.message.content);
  });
});

describe('tunelab chat', () => {
  it('streams the answer to a question on the command line', async () => {
    const [system, user] = examples[0]!.prompt.map((m) => m.content as string);
    const chat = await runCli(['chat', fineTune, user!, '--system', system!, '--temperature', '0', '--home', t.home]);
    expect(chat).toMatchObject({ code: 0, stdout: `${examples[0]!.answer}\n` });
    const bad = await runCli(['chat', fineTune, 'hi', '--temperature', 'warm', '--home', t.home]);
    expect(bad).toMatchObject({ code: 2, stderr: 'error: --temperature takes a number, not "warm"\n' });
  });
});

describe('legacy completions', () => {
  it('continues a prompt, or several, streamed or not', async () => {
    const one = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '今天北京', max_tokens: 6, temperature: 0 });
    expect(one).toMatchObject({ object: 'text_completion', model: TINY_MODEL_NAME });
    expect(one.id).toMatch(/^cmpl-/);
    expect(one.choices).toHaveLength(1);
    expect(one.choices[0]!.text.length).toBeGreaterThan(0);
    expect(one.usage!.prompt_tokens).toBe(tokenizer.encodeWithSpecialTokens('今天北京').length);

    const stream = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '今天北京', max_tokens: 6, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(one.choices[0]!.text);

    const many = await client.completions.create({ model: TINY_MODEL_NAME, prompt: ['今天北京', '上海'], n: 2, max_tokens: 4, temperature: 0 });
    expect(many.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(many.choices[0]!.text).toBe(many.choices[1]!.text);
    expect(many.choices[0]!.text).toBe(one.choices[0]!.text.slice(0, many.choices[0]!.text.length));

    // OpenAI's defaults and edge cases: max_tokens null is 16, top_p 0 is greedy, an empty prompt starts a document.
    const unbounded = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '今天北京', max_tokens: null, temperature: 0 });
    expect(unbounded.usage!.completion_tokens).toBe(16);
    expect(unbounded.choices[0]!.finish_reason).toBe('length');
    const narrow = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '今天北京', max_tokens: 6, temperature: 1, top_p: 0 });
    expect(narrow.choices[0]!.text).toBe(one.choices[0]!.text);
    const empty = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '', max_tokens: 3 });
    expect(empty.usage).toMatchObject({ prompt_tokens: 1, completion_tokens: expect.any(Number) });

    const echoed = await client.completions.create({ model: TINY_MODEL_NAME, prompt: '今天北京', max_tokens: 6, temperature: 0, echo: true });
    expect(echoed.choices[0]!.text).toBe(`今天北京${one.choices[0]!.text}`);
  });
});

describe('serving', () => {
  it('a client that hangs up stops its generation in the engine', async () => {
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: RANDOM_MODEL, prompt: 'Tell me a long story', max_tokens: 2000, temperature: 1, stream: true },
      { signal: controller.signal },
    );
    const generations = () => t.server.services.inference.status().find((s) => s.modelDir.endsWith(RANDOM_MODEL))?.generations;
    for await (const _chunk of stream) break;
    expect(generations()).toBe(1);
    controller.abort();
    await eventually(() => (generations() === 0 ? true : undefined), 1500);
    // The model server stays up for the next request.
    const next = await client.completions.create({ model: RANDOM_MODEL, prompt: 'Hello', max_tokens: 3 });
    expect(next.usage!.completion_tokens).toBe(3);
  });

  it('a model server that dies fails its requests with 503 engine_stopped, and the next request starts another', async () => {
    await client.completions.create({ model: RANDOM_MODEL, prompt: 'Hello', max_tokens: 1 });
    const pid = servePid(RANDOM_MODEL);
    const pending = client.completions.create({ model: RANDOM_MODEL, prompt: 'A long story', max_tokens: 2000 }).then(
      () => null,
      (e: unknown) => e,
    );
    await eventually(() => (t.server.services.inference.status().some((s) => s.generations > 0) ? true : undefined));
    process.kill(pid, 'SIGKILL');
    expect(await pending).toMatchObject({ status: 503, code: 'engine_stopped', error: { message: expect.stringContaining('killed by SIGKILL') } });
    const next = await client.completions.create({ model: RANDOM_MODEL, prompt: 'Hello', max_tokens: 2 });
    expect(next.usage!.completion_tokens).toBe(2);
    expect(servePid(RANDOM_MODEL)).not.toBe(pid);
  });

  it('refuses unknown and foreign models, over-long prompts and bad parameters in OpenAI words', async () => {
    const error = (promise: Promise<unknown>) => promise.then(() => null, (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    const unknown = await error(client.chat.completions.create({ model: 'ft:nope', messages: [{ role: 'user', content: 'hi' }] }));
    expect(unknown).toMatchObject({
      status: 404,
      code: 'model_not_found',
      error: { message: 'The model `ft:nope` does not exist or you do not have access to it.', type: 'invalid_request_error', param: 'model' },
    });

    const other = await t.server.services.orgs.createKey('other-team');
    const foreign = await error(t.clientFor(other.key).chat.completions.create({ model: fineTune, messages: [{ role: 'user', content: 'hi' }] }));
    expect(foreign).toMatchObject({ status: 404, code: 'model_not_found' });

    const long = await error(client.chat.completions.create({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: '天气 '.repeat(800) }], max_tokens: 100 }));
    expect(long).toMatchObject({ status: 400, code: 'context_length_exceeded', param: 'messages' });
    expect((long!.error as { message: string }).message).toMatch(/^This model's maximum context length is 1024 tokens\. However, you requested \d+ tokens \(\d+ in the messages, 100 in the completion\)/);

    const hot = await error(client.chat.completions.create({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'hi' }], temperature: 3 }));
    expect(hot).toMatchObject({ status: 400, param: 'temperature' });
    const picture = await error(
      client.chat.completions.create({
        model: TINY_MODEL_NAME,
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }],
      }),
    );
    expect(picture).toMatchObject({
      status: 400,
      param: 'messages.0.content.0',
      error: { message: 'Invalid \'messages.0.content.0\': a content part of type "image_url": these models take text only' },
    });
    // Refused before the stream begins, so the SDK raises it with its status.
    const outside = await error(client.completions.create({ model: TINY_MODEL_NAME, prompt: [999_999], stream: true }));
    expect(outside).toMatchObject({ status: 400, param: 'prompt' });
    const bias = await error(
      client.chat.completions.create({ model: TINY_MODEL_NAME, messages: [{ role: 'user', content: 'hi' }], logit_bias: { '1': 5 } }),
    );
    expect(bias).toMatchObject({ status: 400, param: 'logit_bias', error: { message: "Invalid 'logit_bias': logit_bias is not supported by tunelab's models yet" } });
  });

  it("records each request's tokens and cost as the organization's inference usage", async () => {
    const other = await t.server.services.orgs.createKey('usage-team');
    const them = t.clientFor(other.key);
    const a = await them.chat.completions.create({ model: TINY_MODEL_NAME, messages: examples[0]!.prompt, max_tokens: 5, temperature: 0 });
    const b = await them.completions.create({ model: TINY_MODEL_NAME, prompt: '上海', max_tokens: 4, temperature: 0 });
    const input = a.usage!.prompt_tokens + b.usage!.prompt_tokens;
    const output = a.usage!.completion_tokens + b.usage!.completion_tokens;
    const usage = await them.get<{ data: Array<Record<string, number>> }>('/usage');
    expect(usage.data[0]).toMatchObject({
      inference_input_tokens: input,
      inference_output_tokens: output,
      inference_cost: expect.closeTo((input * 0.012 + output * 0.016) / 1000, 6),
    });
  });
});

describe('model servers', () => {
  it('a model still loading answers 503 model_loading past the configured wait, then answers; an idle one exits', async () => {
    const slow = await startTestServer({ serving: { loadTimeoutMs: 1, idleMs: 300 } });
    try {
      new BaseModelRegistry(slow.server.home.models).add(path.join(t.home, 'random-qwen3'), RANDOM_MODEL);
      const request = () => slow.client.completions.create({ model: RANDOM_MODEL, prompt: 'Hello', max_tokens: 2 });
      await expect(request()).rejects.toMatchObject({ status: 503, code: 'model_loading', error: { type: 'server_error' } });
      // It went on loading for the next request.
      await eventually(() => (slow.server.services.inference.status()[0]?.modelDir ? true : undefined));
      const answered = await eventually(() => request().catch(() => undefined), 30_000);
      expect(answered.usage!.completion_tokens).toBe(2);
      // Nothing asked of it for idle_seconds: it exits and gives its memory back.
      await eventually(() => (slow.server.services.inference.status().length === 0 ? true : undefined), 5000);
    } finally {
      await slow.cleanup();
    }
  });
});

/**
 * The fine-tune answered by each backend: the engine, then llama.cpp on its f16 GGUF export (which
 * the export check proved to answer token for token as the engine does), as config.json chooses.
 */
describe.each(['engine', 'llamacpp'] as const)('chat completions served by %s', (backend) => {
  beforeAll(async () => {
    if (backend === 'llamacpp') await serveWithLlamaCpp(fineTune, 'f16');
  }, 600_000);

  it('says which backend answered in the system_fingerprint, for chat and legacy completions', async () => {
    const fingerprint = backend === 'engine' ? 'fp_tunelab' : 'fp_tunelab_llamacpp_f16';
    expect((await ask(fineTune, examples[0]!, { max_tokens: 2 })).system_fingerprint).toBe(fingerprint);
    expect((await client.completions.create({ model: fineTune, prompt: '今天', max_tokens: 2 })).system_fingerprint).toBe(fingerprint);
    // Base models have no GGUF export: the engine answers them.
    expect((await ask(TINY_MODEL_NAME, examples[0]!, { max_tokens: 2 })).system_fingerprint).toBe('fp_tunelab');
  });

  it('a fine-tune gives its trained answers at temperature 0, the base model does not; the prompt is the training prefix', async () => {
    for (const example of examples) {
      const tuned = await ask(fineTune, example);
      expect(tuned).toMatchObject({ object: 'chat.completion', model: fineTune, system_fingerprint: expect.any(String) });
      expect(tuned.id).toMatch(/^chatcmpl-/);
      expect(tuned.choices).toEqual([
        { index: 0, message: { role: 'assistant', content: example.answer, refusal: null }, logprobs: null, finish_reason: 'stop' },
      ]);
      // The prompt is the conversation up to the first trained token, and the completion is every
      // trained token: the answer and the end-of-turn token the model stopped on.
      const trained = encodeChat(tokenizer, [...example.prompt, { role: 'assistant', content: example.answer }] as never);
      const firstTrained = trained.mask.indexOf(1);
      const trainedTokens = trained.mask.filter((m) => m === 1).length;
      const prompt = encodeChat(tokenizer, example.prompt as never, { addGenerationPrompt: true }).ids;
      expect(prompt).toEqual(trained.ids.slice(0, firstTrained));
      expect(tuned.usage).toEqual({
        prompt_tokens: firstTrained,
        completion_tokens: trainedTokens,
        total_tokens: firstTrained + trainedTokens,
      });

      const base = await ask(TINY_MODEL_NAME, example, { max_tokens: 40 });
      expect(base.choices[0]!.message.content).not.toBe(example.answer);
    }
  });

  it('streams chunks that add up to the same answer, whole characters only, with usage at the end', async () => {
    const example = examples[1]!;
    const whole = await ask(fineTune, example);
    const stream = await client.chat.completions.create({
      model: fineTune,
      messages: example.prompt,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);

    expect(new Set(chunks.map((c) => `${c.id} ${c.created} ${c.object}`)).size).toBe(1);
    expect(chunks[0]!.id).toMatch(/^chatcmpl-/);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    const deltas = chunks.slice(1, -2).map((c) => c.choices[0]!.delta.content!);
    expect(deltas.length).toBeGreaterThan(3);
    expect(deltas.join('')).toBe(example.answer);
    for (const delta of deltas) expect(delta).not.toContain('\uFFFD');
    expect(chunks.at(-2)!.choices).toEqual([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual(whole.usage);
    for (const chunk of chunks.slice(0, -1)) expect(chunk.usage).toBeNull();
  });

  it('eight concurrent streams each get their own right answer', async () => {
    const answers = await Promise.all(
      examples.slice(0, 8).map(async (example) => {
        const stream = await client.chat.completions.create({ model: fineTune, messages: example.prompt, temperature: 0, stream: true });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
        return text;
      }),
    );
    expect(answers).toEqual(examples.slice(0, 8).map((e) => e.answer));
  });

  it('n choices, each reproducible with the same seed and different with another', async () => {
    // A question it was not trained on, so that its answers are not all the same.
    const unseen: Example = { prompt: [{ role: 'user', content: '给我讲一个关于猫的长故事。' }], answer: '' };
    const sample = (seed: number) => ask(fineTune, unseen, { n: 3, temperature: 1, seed, max_tokens: 12 });
    const first = await sample(7);
    expect(first.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const contents = (r: OpenAI.ChatCompletion) => r.choices.map((c) => c.message.content);
    expect(new Set(contents(first)).size).toBeGreaterThan(1);
    expect(contents(await sample(7))).toEqual(contents(first));
    expect(contents(await sample(8))).not.toEqual(contents(first));
    // One prompt, however many choices.
    expect(first.usage!.prompt_tokens).toBe(encodeChat(tokenizer, unseen.prompt as never, { addGenerationPrompt: true }).ids.length);
  });

  it('stop strings end the answer before them, streamed or not; max_tokens ends it with length', async () => {
    const example = examples[0]!; // 今天北京的天气晴朗,就像我的心情一样明朗!
    const stopped = await ask(fineTune, example, { stop: ['心情', 'never'] });
    expect(stopped.choices[0]).toMatchObject({ message: { content: '今天北京的天气晴朗,就像我的' }, finish_reason: 'stop' });
    const stream = await client.chat.completions.create({ model: fineTune, messages: example.prompt, temperature: 0, stop: '心情', stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('今天北京的天气晴朗,就像我的');

    const short = await ask(fineTune, example, { max_completion_tokens: 3 });
    expect(short.choices[0]!.finish_reason).toBe('length');
    expect(short.usage!.completion_tokens).toBe(3);
  });

  it('json_schema answers match the schema and end there with stop', async () => {
    // Values with an end (a boolean, an enum): the tiny model would fill a free string to max_tokens.
    const schema = {
      type: 'object',
      properties: { sunny: { type: 'boolean' }, sky: { enum: ['clear', 'cloudy', 'rain'] } },
      required: ['sunny', 'sky'],
      additionalProperties: false,
    };
    for (const example of examples.slice(0, 3)) {
      const structured = await ask(fineTune, example, {
        response_format: { type: 'json_schema', json_schema: { name: 'weather', strict: true, schema } },
        max_tokens: 100,
      });
      expect(structured.choices[0]!.finish_reason).toBe('stop');
      const value = JSON.parse(structured.choices[0]!.message.content!) as Record<string, unknown>;
      expect(Object.keys(value).sort()).toEqual(['sky', 'sunny']);
      expect(typeof value.sunny).toBe('boolean');
      expect(['clear', 'cloudy', 'rain']).toContain(value.sky);
    }
  });
});
