/**
 * Tool calls as a model family writes them. The tools and the calls in a conversation go to the
 * model through its own chat template; what the model writes back is read here, per family:
 *
 * - `hermes` (Qwen2.5, Qwen3, tunelab-tiny): `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call;
 * - `llama3` (Llama 3.1+ JSON tool calling): `{"name": ..., "parameters": {...}}` as the whole answer (after `<|python_tag|>`);
 * - `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
 *
 * Output arrives decoded without special tokens, so Llama's `<|python_tag|>` and Mistral's
 * `[TOOL_CALLS]` are gone by then: for those a call is an answer that starts with its JSON.
 */
export type ToolCallFormat = 'hermes' | 'llama3' | 'mistral';

/** A call read back from the model: the function's name and its arguments as JSON text. */
export interface ParsedToolCall {
  name: string;
  arguments: string;
}

/** How the chat template writes tool calls, or null when it renders no tools. */
export function toolCallFormat(template: string | null): ToolCallFormat | null {
  if (!template || !/\btools\b/.test(template)) return null;
  if (template.includes('<tool_call>')) return 'hermes';
  if (template.includes('[TOOL_CALLS]')) return 'mistral';
  if (template.includes('<|python_tag|>') || (template.includes('<|eot_id|>') && template.includes('"parameters"'))) return 'llama3';
  return null;
}

/** Where a call may begin: anywhere after some text (Hermes blocks), or only at the start of the answer. */
export function callOpener(format: ToolCallFormat): { text: string; atStart: boolean } {
  switch (format) {
    case 'hermes':
      return { text: '<tool_call>', atStart: false };
    case 'llama3':
      return { text: '{', atStart: true };
    case 'mistral':
      return { text: '[', atStart: true };
  }
}

/**
 * The calls in an answer, with the text before them as content; null when the answer holds no
 * well-formed call (it is then plain content, as the model wrote it).
 */
export function parseToolCalls(format: ToolCallFormat, text: string): { content: string; calls: ParsedToolCall[] } | null {
  if (format === 'hermes') {
    const start = text.indexOf('<tool_call>');
    if (start < 0) return null;
    const calls: ParsedToolCall[] = [];
    for (const match of text.slice(start).matchAll(/<tool_call>([\s\S]*?)(<\/tool_call>|$)/g)) {
      const call = callFrom(parseJson(match[1]!.trim()), 'arguments');
      // A last block cut off by max_tokens is dropped when complete calls came before it.
      if (!call && !match[2] && calls.length) break;
      if (!call) return null;
      calls.push(call);
    }
    return calls.length ? { content: text.slice(0, start).trim(), calls } : null;
  }
  const json = parseJson(text.trim());
  const list = format === 'mistral' ? json : Array.isArray(json) ? json : [json];
  if (!Array.isArray(list) || list.length === 0) return null;
  const calls = list.map((item) => callFrom(item, format === 'llama3' ? 'parameters' : 'arguments'));
  return calls.every((call): call is ParsedToolCall => call !== null) ? { content: '', calls } : null;
}

/**
 * A conversation's tool calls as templates read them: OpenAI sends `arguments` as JSON text,
 * templates write it with `tojson` and expect an object (Hugging Face's convention), so text that
 * holds a JSON object becomes that object. Training files and requests go through this alike.
 */
export function templateToolCalls(toolCalls: readonly unknown[]): unknown[] {
  return toolCalls.map((call) => {
    if (!isObject(call) || !isObject(call.function) || typeof call.function.arguments !== 'string') return call;
    const parsed = parseJson(call.function.arguments);
    return isObject(parsed) ? { ...call, function: { ...call.function, arguments: parsed } } : call;
  });
}

function callFrom(value: unknown, argumentsKey: 'arguments' | 'parameters'): ParsedToolCall | null {
  if (!isObject(value) || typeof value.name !== 'string' || !value.name) return null;
  const args = value[argumentsKey] ?? value.arguments ?? {};
  if (!isObject(args)) return null;
  return { name: value.name, arguments: JSON.stringify(args) };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
