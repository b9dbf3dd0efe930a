import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import type { ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { refusal } from './support/refusal.js';
import { type TestServer, finished, startTestServer } from './support/server.js';

const WEATHER_CALLS = path.resolve(import.meta.dirname, 'fixtures/tools/weather-calls.jsonl');

interface Example {
  messages: Array<ChatCompletionMessageParam & { tool_calls?: Array<{ function: { name: string; arguments: string } }> }>;
  tools: ChatCompletionTool[];
}
const examples: Example[] = fs
  .readFileSync(WEATHER_CALLS, 'utf8')
  .trim()
  .split('\n')
  .map((line) => JSON.parse(line) as Example);
const weatherTool = examples[0]!.tools[0]!;
const cityOf = (example: Example) => JSON.parse(example.messages[1]!.tool_calls![0]!.function.arguments) as { city: string };
/** The training question about a city. */
const question = (city: string): ChatCompletionMessageParam[] => [examples.find((example) => cityOf(example).city === city)!.messages[0]!];

let t: TestServer;
let client: OpenAI;
let fineTune: string;
let tokenizer: ModelTokenizer;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true, serving: { maxBatch: 8 } });
  client = t.client;
  tokenizer = ModelTokenizer.load(path.join(t.server.home.models, TINY_MODEL_NAME));
  const file = await client.files.create({ file: fs.createReadStream(WEATHER_CALLS), purpose: 'fine-tune' });
  // Twice the auto rule's 10 epochs for 12 examples: at 10 the format is learned but a third of
  // the questions get another example's city (the prompts share their first ~100 tokens, the tools).
  const job = await client.fineTuning.jobs.create({
    model: TINY_MODEL_NAME,
    training_file: file.id,
    suffix: 'tools',
    seed: 1,
    hyperparameters: { n_epochs: 20 },
  });
  const done = await finished(client, job.id, 900_000);
  expect(done.status, JSON.stringify(done.error)).toBe('succeeded');
  fineTune = done.fine_tuned_model!;
}, 1_000_000);
afterAll(() => t?.cleanup());


describe('tools in the chat template', () => {
  it('renders tools and calls in the Hermes form, and a prompt is the training prefix token for token', () => {
    const example = examples[0]!;
    const trained = encodeChat(tokenizer, example.messages as never, { tools: example.tools });
    const text = trained.segments.map((segment) => segment.text).join('');
    expect(text).toContain('<tools>\n{"type": "function", "function": {"name": "get_weather"');
    expect(text).toContain('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>');
    const prompt = encodeChat(tokenizer, example.messages.slice(0, -1) as never, { tools: example.tools, addGenerationPrompt: true });
    expect(trained.ids.slice(0, prompt.ids.length)).toEqual(prompt.ids);
    // The call is what is trained: every token after the prompt through the end-of-turn token (the newline after it is not).
    expect(trained.mask.slice(prompt.ids.length, -1).every((m) => m === 1)).toBe(true);
    expect(trained.mask.at(-1)).toBe(0);
    expect(trained.mask.slice(0, prompt.ids.length).every((m) => m === 0)).toBe(true);
  });
});

describe('a model fine-tuned on tool calls', () => {
  it.each(['Paris', 'Boston', 'Oslo', 'Lima'])('calls get_weather for %s with the trained arguments', async (city) => {
    const completion = await client.chat.completions.create({ model: fineTune, messages: question(city), tools: [weatherTool], temperature: 0 });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const call = choice.message.tool_calls![0]!;
    expect(call.type).toBe('function');
    expect(call.id).toMatch(/^call_/);
    if (call.type !== 'function') throw new Error('not a function call');
    expect(call.function.name).toBe('get_weather');
    expect(JSON.parse(call.function.arguments)).toEqual({ city });
  });

  it('streams the call as tool-call deltas the SDK puts back together', async () => {
    const stream = client.chat.completions.stream({ model: fineTune, messages: question('Tokyo'), tools: [weatherTool], temperature: 0 });
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    const call = choice.message.tool_calls![0]!;
    if (call.type !== 'function') throw new Error('not a function call');
    expect(call.function.name).toBe('get_weather');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'Tokyo' });
  });

  it('answers the legacy functions/function_call with a function_call', async () => {
    const completion = await client.chat.completions.create({
      model: fineTune,
      messages: question('Berlin'),
      functions: [weatherTool.type === 'function' ? weatherTool.function : (undefined as never)],
      function_call: { name: 'get_weather' },
      temperature: 0,
    });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('function_call');
    expect(choice.message.function_call?.name).toBe('get_weather');
    expect(JSON.parse(choice.message.function_call!.arguments)).toEqual({ city: 'Berlin' });
  });

  it('with tool_choice none answers in text, and takes a conversation holding calls and their results', async () => {
    const completion = await client.chat.completions.create({
      model: fineTune,
      messages: [
        ...question('Paris'),
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temperature": 21}' },
      ],
      tools: [weatherTool],
      tool_choice: 'none',
      temperature: 0,
      max_tokens: 20,
    });
    expect(completion.choices[0]!.message.tool_calls).toBeUndefined();
    expect(typeof completion.choices[0]!.message.content).toBe('string');
  });
});

describe('constrained decoding on the untrained base model', () => {
  it('tool_choice required yields a call whose arguments match the schema', async () => {
    // A random model rarely closes a string of its own accord: the schema bounds the city's length.
    const boundedTool: ChatCompletionTool = {
      type: 'function',
      function: {
        name: 'get_weather',
        parameters: {
          type: 'object',
          properties: { city: { type: 'string', maxLength: 24 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
          required: ['city', 'unit'],
          additionalProperties: false,
        },
      },
    };
    const completion = await client.chat.completions.create({
      model: TINY_MODEL_NAME,
      messages: question('Paris'),
      tools: [boundedTool],
      tool_choice: 'required',
      temperature: 1,
      seed: 7,
      n: 8,
      max_tokens: 200,
    });
    for (const choice of completion.choices) {
      expect(choice.finish_reason).toBe('tool_calls');
      const call = choice.message.tool_calls![0]!;
      if (call.type !== 'function') throw new Error('not a function call');
      expect(call.function.name).toBe('get_weather');
      const args = JSON.parse(call.function.arguments) as { city: string; unit: string };
      expect(Object.keys(args)).toEqual(['city', 'unit']);
      expect(args.city.length).toBeLessThanOrEqual(24);
      expect(['celsius', 'fahrenheit']).toContain(args.unit);
    }
  });

  it('parse() with a zod schema returns an object that validates, 50 seeds out of 50', async () => {
    const Report = z.object({
      city: z.string().max(12),
      temperature: z.number().int().min(-40).max(50),
      sunny: z.boolean(),
      unit: z.enum(['celsius', 'fahrenheit']),
    });
    const completion = await client.chat.completions.parse({
      model: TINY_MODEL_NAME,
      messages: question('Rome'),
      response_format: zodResponseFormat(Report, 'report'),
      temperature: 1,
      seed: 100,
      n: 50,
      max_tokens: 120,
    });
    expect(completion.choices).toHaveLength(50);
    for (const choice of completion.choices) {
      expect(choice.finish_reason).toBe('stop');
      expect(Report.safeParse(choice.message.parsed).success).toBe(true);
    }
  });

  it('json_object yields a JSON object; streamed as well', async () => {
    const stream = await client.chat.completions.create({
      model: TINY_MODEL_NAME,
      messages: question('Rome'),
      response_format: { type: 'json_object' },
      temperature: 0.7,
      seed: 3,
      max_tokens: 300,
      stream: true,
    });
    let text = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    if (finish === 'stop') expect(typeof JSON.parse(text)).toBe('object');
    else expect(text.startsWith('{')).toBe(true);
  });

  it('a schema the library cannot compile is a 400 naming the keyword', async () => {
    const error = await refusal(
      client.chat.completions.create({
        model: TINY_MODEL_NAME,
        messages: question('Rome'),
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'x', strict: true, schema: { type: 'object', properties: { a: { type: 'string', format: 'no-such-format' } } } },
        },
      }),
    );
    expect(error.status).toBe(400);
    expect(error.message).toContain('no-such-format');
    expect(error.param).toBe('response_format.json_schema.schema');
  });

  it('refuses a tool_choice naming no tool, and tools of other types', async () => {
    const named = await refusal(
      client.chat.completions.create({ model: TINY_MODEL_NAME, messages: question('Rome'), tools: [weatherTool], tool_choice: { type: 'function', function: { name: 'nope' } } }),
    );
    expect(named.param).toBe('tool_choice');
    const custom = await refusal(client.chat.completions.create({ model: TINY_MODEL_NAME, messages: question('Rome'), tools: [{ type: 'custom', custom: { name: 'x' } }] }));
    expect(custom.status).toBe(400);
    expect(custom.param).toBe('tools.0.type');
  });
});

describe('logprobs', () => {
  it('reports each content token with its bytes and alternatives, consistent with the choice made', async () => {
    const completion = await client.chat.completions.create({
      model: fineTune,
      messages: question('Paris'),
      logprobs: true,
      top_logprobs: 5,
      temperature: 0,
      max_tokens: 12,
    });
    const choice = completion.choices[0]!;
    const content = choice.logprobs!.content!;
    expect(content.length).toBe(completion.usage!.completion_tokens - (choice.finish_reason === 'stop' ? 1 : 0));
    expect(Buffer.from(content.flatMap((token) => token.bytes!)).toString('utf8')).toBe(choice.message.content);
    for (const token of content) {
      expect(token.top_logprobs).toHaveLength(5);
      // Greedy: the chosen token is the most likely one, so its log-probability heads the list.
      expect(token.logprob).toBeCloseTo(token.top_logprobs[0]!.logprob, 6);
      expect(token.top_logprobs.reduce((sum, alt) => sum + Math.exp(alt.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
      expect(token.logprob).toBeLessThanOrEqual(0);
    }
  });

  it('streams them with the content, and legacy completions report them too', async () => {
    const stream = await client.chat.completions.create({
      model: fineTune,
      messages: question('Paris'),
      logprobs: true,
      temperature: 0,
      max_tokens: 8,
      stream: true,
    });
    let streamed = 0;
    for await (const chunk of stream) streamed += chunk.choices[0]?.logprobs?.content?.length ?? 0;
    expect(streamed).toBeGreaterThan(0);

    const legacy = await client.completions.create({ model: TINY_MODEL_NAME, prompt: 'The weather', max_tokens: 6, temperature: 0, logprobs: 3 });
    const logprobs = legacy.choices[0]!.logprobs!;
    expect(logprobs.tokens!.join('')).toBe(legacy.choices[0]!.text);
    expect(logprobs.token_logprobs).toHaveLength(6);
    expect(Object.keys(logprobs.top_logprobs![0]!).length).toBeGreaterThan(0);
    expect(logprobs.text_offset![1]).toBe(logprobs.tokens![0]!.length);
  });

  it('refuses top_logprobs without logprobs, and above 20', async () => {
    for (const extra of [{ top_logprobs: 2 }, { logprobs: true, top_logprobs: 21 }]) {
      const error = await refusal(client.chat.completions.create({ model: TINY_MODEL_NAME, messages: question('Rome'), ...extra }));
      expect(error.status).toBe(400);
      expect(error.param).toBe('top_logprobs');
    }
  });
});
