import { createOpenAI } from '@ai-sdk/openai';
import { ChatOpenAI } from '@langchain/openai';
import { generateObject, generateText, jsonSchema, tool } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TINY_MODEL_NAME } from '../src/models/tiny-model.js';
import { type TestServer, startTestServer } from './support/server.js';

// The clients people point at OpenAI-compatible servers, against the untrained built-in model:
// what they get must have the shape they asked for whatever the model writes.

let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ engineSlots: 1, builtinModels: true, serving: { maxBatch: 8 } });
}, 120_000);
afterAll(() => t?.cleanup());

const Weather = z.object({ sunny: z.boolean(), temperature: z.number().int().min(-40).max(50) });
const weatherParameters = {
  type: 'object' as const,
  properties: { city: { type: 'string' as const, maxLength: 20 } },
  required: ['city'],
  additionalProperties: false,
};

describe("Vercel's AI SDK", () => {
  const provider = () => createOpenAI({ baseURL: t.server.baseURL, apiKey: t.apiKey });

  it('generateText with the default openai(model), which speaks the Responses API', async () => {
    const result = await generateText({ model: provider()(TINY_MODEL_NAME), prompt: 'Hello', maxOutputTokens: 5, temperature: 0 });
    expect(result.text.length).toBeGreaterThan(0);
    expect(result.usage.outputTokens).toBeGreaterThan(0);
  });

  it('generateObject returns an object of the schema, on Responses and on chat', async () => {
    for (const model of [provider()(TINY_MODEL_NAME), provider().chat(TINY_MODEL_NAME)]) {
      const { object } = await generateObject({ model, schema: Weather, prompt: 'What is the weather like?', maxOutputTokens: 60 });
      expect(Weather.safeParse(object).success).toBe(true);
    }
  });

  it('generateText with a tool the model must call', async () => {
    const result = await generateText({
      model: provider()(TINY_MODEL_NAME),
      prompt: 'What is the weather in Paris?',
      tools: { get_weather: tool({ description: 'Current weather in a city', inputSchema: jsonSchema<{ city: string }>(weatherParameters) }) },
      toolChoice: 'required',
      maxOutputTokens: 80,
    });
    expect(result.toolCalls).toHaveLength(1);
    expect(result.toolCalls[0]!.toolName).toBe('get_weather');
    expect(typeof (result.toolCalls[0]!.input as { city: string }).city).toBe('string');
  });
});

describe("LangChain's ChatOpenAI", () => {
  const chat = (useResponsesApi: boolean) =>
    new ChatOpenAI({ model: TINY_MODEL_NAME, apiKey: t.apiKey, configuration: { baseURL: t.server.baseURL }, maxTokens: 80, useResponsesApi });

  it('withStructuredOutput returns an object of the schema, on chat and on Responses', async () => {
    for (const useResponsesApi of [false, true]) {
      const weather = await chat(useResponsesApi).withStructuredOutput(Weather, { name: 'weather' }).invoke('What is the weather like?');
      expect(Weather.safeParse(weather).success).toBe(true);
    }
  });

  it('calls a bound tool when it must', async () => {
    const model = chat(false).bindTools([{ type: 'function', function: { name: 'get_weather', parameters: weatherParameters } }], { tool_choice: 'required' });
    const message = await model.invoke('What is the weather in Paris?');
    expect(message.tool_calls).toHaveLength(1);
    expect(message.tool_calls![0]!.name).toBe('get_weather');
    expect(typeof message.tool_calls![0]!.args.city).toBe('string');
  });
});
