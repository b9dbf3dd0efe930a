import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import OpenAI from 'openai';
import { zodTextFormat } from 'openai/helpers/zod';
import type { FunctionTool, ResponseStreamEvent } from 'openai/resources/responses/responses';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { enginePython } from '../src/engine/python.js';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { refusal } from './support/refusal.js';
import { type TestServer, startTestServer } from './support/server.js';

let t: TestServer;
let client: OpenAI;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true, serving: { maxBatch: 8 } });
  client = t.client;
}, 120_000);
afterAll(() => t?.cleanup());

const weatherTool: FunctionTool = {
  type: 'function',
  name: 'get_weather',
  description: 'Current weather in a city',
  // A random model rarely closes a string of its own accord: the schema bounds the city's length.
  parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 } }, required: ['city'], additionalProperties: false },
  strict: true,
};

describe('POST /v1/responses', () => {
  it('answers text, stores the response, and GET and DELETE find it', async () => {
    const response = await client.responses.create({ model: TINY_MODEL_NAME, input: 'What is the weather in Paris?', instructions: 'Answer briefly.', max_output_tokens: 8, temperature: 0 });
    expect(response.object).toBe('response');
    expect(response.id).toMatch(/^resp_/);
    expect(['completed', 'incomplete']).toContain(response.status);
    if (response.status === 'incomplete') expect(response.incomplete_details?.reason).toBe('max_output_tokens');
    const message = response.output[0]!;
    expect(message.type).toBe('message');
    expect(response.output_text.length).toBeGreaterThan(0);
    expect(response.usage!.output_tokens).toBeGreaterThan(0);
    expect(response.usage!.total_tokens).toBe(response.usage!.input_tokens + response.usage!.output_tokens);
    expect(response.instructions).toBe('Answer briefly.');

    const stored = await client.responses.retrieve(response.id);
    expect(stored.output).toEqual(response.output);
    await client.responses.delete(response.id);
    expect((await refusal(client.responses.retrieve(response.id))).status).toBe(404);
  });

  it('streams the documented event sequence, ending in the stored response', async () => {
    const events: ResponseStreamEvent[] = [];
    const stream = client.responses.stream({ model: TINY_MODEL_NAME, input: 'Hello there', max_output_tokens: 6, temperature: 0 });
    for await (const event of stream) events.push(event);
    const final = await stream.finalResponse();
    const types = events.map((event) => event.type);
    const deltas = types.filter((type) => type === 'response.output_text.delta').length;
    expect(deltas).toBeGreaterThan(0);
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array<string>(deltas).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      final.status === 'incomplete' ? 'response.incomplete' : 'response.completed',
    ]);
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, i) => i));
    const text = events.flatMap((event) => (event.type === 'response.output_text.delta' ? [event.delta] : [])).join('');
    expect(final.output_text).toBe(text);
    expect((await client.responses.retrieve(final.id)).output_text).toBe(text);
  });

  it('calls a function tool, and continues with its output through previous_response_id', async () => {
    const first = await client.responses.create({
      model: TINY_MODEL_NAME,
      input: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [weatherTool],
      tool_choice: 'required',
      temperature: 0.8,
      max_output_tokens: 80,
    });
    const call = first.output.find((item) => item.type === 'function_call');
    if (call?.type !== 'function_call') throw new Error(`no function call in ${JSON.stringify(first.output)}`);
    expect(call.name).toBe('get_weather');
    expect(typeof JSON.parse(call.arguments).city).toBe('string');

    const second = await client.responses.create({
      model: TINY_MODEL_NAME,
      previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"temperature": 21}' }],
      tools: [weatherTool],
      tool_choice: 'none',
      max_output_tokens: 5,
      temperature: 0,
    });
    expect(second.previous_response_id).toBe(first.id);
    // The earlier turns are part of the prompt: the question, the call and its result.
    expect(second.usage!.input_tokens).toBeGreaterThan(first.usage!.input_tokens + first.usage!.output_tokens);
  });

  it('parse() with text.format from a zod schema returns an object that validates', async () => {
    const Weather = z.object({ sunny: z.boolean(), temperature: z.number().int().min(-40).max(50) });
    for (const seed of [1, 2, 3]) {
      const response = await client.responses.parse({
        model: TINY_MODEL_NAME,
        input: `What is the weather like? (${seed})`,
        text: { format: zodTextFormat(Weather, 'weather') },
        temperature: 1,
        max_output_tokens: 60,
      });
      expect(Weather.safeParse(response.output_parsed).success).toBe(true);
    }
  });

  it('store false keeps nothing; an unknown previous_response_id is a 404 naming it', async () => {
    const response = await client.responses.create({ model: TINY_MODEL_NAME, input: 'Hi', max_output_tokens: 2, store: false });
    expect((await refusal(client.responses.retrieve(response.id))).status).toBe(404);
    const missing = await refusal(client.responses.create({ model: TINY_MODEL_NAME, input: 'Hi', previous_response_id: response.id }));
    expect(missing.status).toBe(404);
    expect(missing.param).toBe('previous_response_id');
  });

  it('refuses built-in tools, reasoning and other item types by name', async () => {
    const search = await refusal(client.responses.create({ model: TINY_MODEL_NAME, input: 'Hi', tools: [{ type: 'web_search' }] }));
    expect(search.status).toBe(400);
    expect(search.param).toBe('tools.0.type');
    expect(search.message).toContain('web_search');
    const reasoning = await refusal(client.responses.create({ model: TINY_MODEL_NAME, input: 'Hi', reasoning: { effort: 'low' } }));
    expect(reasoning.param).toBe('reasoning');
    const item = await refusal(
      client.responses.create({ model: TINY_MODEL_NAME, input: [{ type: 'reasoning', id: 'rs_1', summary: [] }] }),
    );
    expect(item.param).toBe('input.0.type');
    expect(item.message).toContain('reasoning');
    const schema = await refusal(
      client.responses.create({
        model: TINY_MODEL_NAME,
        input: 'Hi',
        text: { format: { type: 'json_schema', name: 'x', strict: true, schema: { type: 'object', properties: { a: { type: 'string', format: 'no-such-format' } } } } },
      }),
    );
    expect(schema.status).toBe(400);
    expect(schema.param).toBe('text.format.schema');
    expect(schema.message).toContain('no-such-format');
  });
});

describe('the Python SDK', () => {
  it('parses pydantic structured outputs, makes a forced call, and streams a response', async () => {
    const script = path.join(import.meta.dirname, 'python/structured_outputs.py');
    // Asynchronously: the server answering the script runs in this process.
    const { stdout: out } = await promisify(execFile)(enginePython(), [script, TINY_MODEL_NAME], {
      env: { ...process.env, OPENAI_BASE_URL: t.server.baseURL, OPENAI_API_KEY: t.apiKey },
      encoding: 'utf8',
      timeout: 120_000,
    });
    const result = JSON.parse(out) as { parsed: Array<{ sunny: boolean; temperature: number }>; call: { name: string; arguments: { city: string } }; finish_reason: string; events: string[] };
    expect(result.parsed).toHaveLength(10);
    for (const weather of result.parsed) {
      expect(typeof weather.sunny).toBe('boolean');
      expect(weather.temperature).toBeGreaterThanOrEqual(-40);
      expect(weather.temperature).toBeLessThanOrEqual(50);
    }
    expect(result.finish_reason).toBe('tool_calls');
    expect(result.call.name).toBe('get_weather');
    expect(typeof result.call.arguments.city).toBe('string');
    expect(result.events[0]).toBe('response.created');
    expect(result.events.at(-1)).toMatch(/^response\.(completed|incomplete)$/);
  }, 180_000);
});
