import type { WeightedMessage } from '../tokenizer/chat-encoding.js';
import type { DatasetError, ErrorCategory } from './findings.js';

/** The three formats a fine-tuning file can be in. A file is in one of them, decided by its first example. */
export type DatasetFormat = 'chat' | 'prompt_completion' | 'preference';

export type Example =
  | { format: 'chat'; messages: WeightedMessage[]; tools?: unknown[] }
  | { format: 'prompt_completion'; prompt: string; completion: string }
  | { format: 'preference'; messages: WeightedMessage[]; tools?: unknown[]; preferred: WeightedMessage; nonPreferred: WeightedMessage };

const EXAMPLE_KEYS: Record<DatasetFormat, readonly string[]> = {
  chat: ['messages', 'tools', 'parallel_tool_calls', 'functions'],
  prompt_completion: ['prompt', 'completion'],
  preference: ['input', 'preferred_output', 'non_preferred_output', 'preferred_completion', 'non_preferred_completion'],
};
const MESSAGE_KEYS = new Set(['role', 'content', 'name', 'weight', 'tool_calls', 'tool_call_id', 'function_call']);
const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'function']);

/** The format an object looks like it is in, or null when it has none of any format's keys. */
export function formatOf(value: Record<string, unknown>): DatasetFormat | null {
  if ('messages' in value) return 'chat';
  if ('input' in value || 'preferred_output' in value || 'non_preferred_output' in value) return 'preference';
  if ('prompt' in value || 'completion' in value) return 'prompt_completion';
  return null;
}

class ExampleError extends Error {
  constructor(
    readonly category: ErrorCategory,
    message: string,
    readonly messageIndex: number | null = null,
    readonly field: string | null = null,
  ) {
    super(message);
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const describe = (value: unknown): string =>
  value === null ? 'null' : Array.isArray(value) ? 'a list' : typeof value === 'string' ? `the string ${JSON.stringify(truncate(value, 40))}` : `${typeof value === 'object' ? 'an object' : `the ${typeof value} ${String(value)}`}`;

const truncate = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Checks one parsed line against the file's format and returns the example, or the first thing
 * wrong with it, located by message index and field. Checks run in a fixed order (the object,
 * its format and keys, each message, then the example as a whole), so one defect gives one error.
 */
export function checkExample(value: unknown, line: number, fileFormat: DatasetFormat): Example | DatasetError {
  try {
    return parseExample(value, fileFormat);
  } catch (error) {
    if (!(error instanceof ExampleError)) throw error;
    return { line, message_index: error.messageIndex, field: error.field, category: error.category, message: error.message };
  }
}

function parseExample(value: unknown, fileFormat: DatasetFormat): Example {
  if (!isObject(value)) {
    throw new ExampleError('data_type', `Each line must be a JSON object; this one is ${describe(value)}.`);
  }
  const format = formatOf(value);
  if (format !== null && format !== fileFormat) {
    throw new ExampleError(
      'mixed_formats',
      `This example is in ${FORMAT_NAMES[format]} format, but the file is in ${FORMAT_NAMES[fileFormat]} format (decided by its first example); a file holds one format.`,
    );
  }
  if (fileFormat === 'chat') {
    requireMessageList(value.messages, 'messages', 'missing_messages_list', value);
    checkKeys(value, fileFormat);
    const messages = parseMessageList(value.messages as unknown[], 'messages');
    const tools =
      parseTools(value.tools, 'tools') ??
      parseTools(Array.isArray(value.functions) ? value.functions.map((fn) => ({ type: 'function', function: fn })) : value.functions, 'functions');
    if (!messages.some((message) => message.role === 'assistant')) {
      throw new ExampleError('example_missing_assistant_message', 'The example has no assistant message, so there is nothing to learn from it.', null, 'messages');
    }
    return { format: 'chat', messages, ...(tools ? { tools } : {}) };
  }
  if (fileFormat === 'prompt_completion') {
    if (typeof value.prompt !== 'string') {
      throw new ExampleError('invalid_prompt', `"prompt" must be a string; it is ${'prompt' in value ? describe(value.prompt) : 'missing'}.`, null, 'prompt');
    }
    if (typeof value.completion !== 'string' || value.completion.length === 0) {
      const what = !('completion' in value) ? 'missing' : value.completion === '' ? 'empty' : describe(value.completion);
      throw new ExampleError('invalid_completion', `"completion" must be a non-empty string; it is ${what}.`, null, 'completion');
    }
    checkKeys(value, fileFormat);
    return { format: 'prompt_completion', prompt: value.prompt, completion: value.completion };
  }
  return parsePreference(value);
}

const FORMAT_NAMES: Record<DatasetFormat, string> = {
  chat: 'chat (messages)',
  prompt_completion: 'prompt/completion',
  preference: 'preference (input, preferred_output, non_preferred_output)',
};

function checkKeys(value: Record<string, unknown>, format: DatasetFormat): void {
  for (const key of Object.keys(value)) {
    if (!EXAMPLE_KEYS[format].includes(key)) {
      throw new ExampleError(
        'unrecognized_key',
        `Unrecognized key "${key}" in a ${FORMAT_NAMES[format]} example; the keys are ${EXAMPLE_KEYS[format].join(', ')}.`,
        null,
        key,
      );
    }
  }
}

function requireMessageList(list: unknown, field: string, category: ErrorCategory, example: Record<string, unknown>): void {
  if (!Array.isArray(list) || list.length === 0) {
    const what = list === undefined ? 'missing' : Array.isArray(list) ? 'an empty list' : describe(list);
    const hint = list === undefined && 'message' in example ? ' (the key is "messages", plural)' : '';
    throw new ExampleError(category, `"${field}" must be a non-empty list of messages; it is ${what}${hint}.`, null, field);
  }
}

function parseMessageList(list: unknown[], field: string): WeightedMessage[] {
  const prefix = field === 'messages' ? '' : `${field}[*].`;
  const messages = list.map((message, index) => parseMessage(message, index, prefix));
  // A legacy function result answers the function call before it.
  let lastCall: string | undefined;
  for (const message of messages) {
    if (message.role === 'assistant' && message.tool_calls) lastCall = (message.tool_calls.at(-1) as { id?: string }).id;
    if (message.role === 'tool' && message.tool_call_id === undefined) message.tool_call_id = lastCall ?? 'call_0';
  }
  return messages;
}

function parseMessage(message: unknown, index: number, prefix: string): WeightedMessage {
  const at = (field: string | null) => (field === null ? (prefix ? prefix.slice(0, -1).replace('*', String(index)) : null) : `${prefix.replace('*', String(index))}${field}`);
  const fail = (category: ErrorCategory, text: string, field: string | null): never => {
    throw new ExampleError(category, text, index, at(field));
  };
  if (!isObject(message)) return fail('data_type', `Message ${index} must be an object; it is ${describe(message)}.`, null);
  const hasToolCalls = 'tool_calls' in message || 'function_call' in message;
  if (!('role' in message)) return fail('message_missing_key', `Message ${index} has no "role".`, 'role');
  if (!('content' in message) && !(message.role === 'assistant' && hasToolCalls)) {
    return fail('message_missing_key', `Message ${index} has no "content".`, 'content');
  }
  for (const key of Object.keys(message)) {
    if (!MESSAGE_KEYS.has(key)) {
      fail('message_unrecognized_key', `Message ${index} has an unrecognized key "${key}"; a message has role, content, name, weight, tool_calls, tool_call_id.`, key);
    }
  }
  const role = message.role;
  if (typeof role !== 'string' || !ROLES.has(role)) {
    fail('unrecognized_role', `Message ${index} has role ${describe(role)}; roles are system, user, assistant, tool and function.`, 'role');
  }
  const content = parseContent(message.content, role === 'assistant' && hasToolCalls);
  if (content === undefined) {
    const what = message.content === '' ? 'empty' : describe(message.content);
    fail('missing_content', `Message ${index} (${String(role)}) must have non-empty text content; it is ${what}.`, 'content');
  }
  const parsed: WeightedMessage = { role: role as string, content: content ?? null };
  if ('name' in message) {
    if (typeof message.name !== 'string' || message.name.length === 0) {
      fail('invalid_name', `Message ${index}: "name" must be a non-empty string; it is ${describe(message.name)}.`, 'name');
    }
    parsed.name = message.name as string;
  }
  if ('weight' in message) {
    if (role !== 'assistant') fail('invalid_weight', `Message ${index}: "weight" applies only to assistant messages; this one is ${String(role)}.`, 'weight');
    if (message.weight !== 0 && message.weight !== 1) fail('invalid_weight', `Message ${index}: "weight" must be 0 or 1; it is ${describe(message.weight)}.`, 'weight');
    parsed.weight = message.weight as number;
  }
  if ('tool_calls' in message) {
    if (role !== 'assistant') fail('invalid_tool_calls', `Message ${index}: only assistant messages make tool calls.`, 'tool_calls');
    parsed.tool_calls = parseToolCalls(message.tool_calls, index, at);
  }
  if (role === 'tool') {
    if (typeof message.tool_call_id !== 'string' || message.tool_call_id.length === 0) {
      fail('invalid_tool_calls', `Message ${index} (tool) must name the call it answers in "tool_call_id".`, 'tool_call_id');
    }
    parsed.tool_call_id = message.tool_call_id as string;
  }
  // OpenAI's legacy function calling, in today's form: chat templates render only tool calls,
  // and would otherwise drop the call and its result from what is trained.
  if ('function_call' in message) {
    if (role !== 'assistant') fail('invalid_tool_calls', `Message ${index}: only assistant messages make function calls.`, 'function_call');
    const call = message.function_call;
    if (!isObject(call) || typeof call.name !== 'string' || call.name.length === 0 || typeof call.arguments !== 'string') {
      fail('invalid_tool_calls', `Message ${index}: "function_call" must be {"name": ..., "arguments": "<JSON string>"}.`, 'function_call');
    }
    const { name, arguments: args } = call as { name: string; arguments: string };
    parsed.tool_calls = [{ id: `call_${index}`, type: 'function', function: { name, arguments: args } }];
  }
  if (role === 'function') {
    if (typeof message.name !== 'string') fail('invalid_name', `Message ${index} (function) must name the function whose result it holds.`, 'name');
    parsed.role = 'tool';
  }
  return parsed;
}

/** The text of a message's content: a string, or a list of text parts. Undefined when there is none. */
function parseContent(content: unknown, mayBeEmpty: boolean): string | null | undefined {
  if (typeof content === 'string') return content.length > 0 || mayBeEmpty ? content : undefined;
  if (content === null || content === undefined) return mayBeEmpty ? null : undefined;
  if (Array.isArray(content) && content.length > 0 && content.every((part) => isObject(part) && part.type === 'text' && typeof part.text === 'string')) {
    const text = content.map((part) => (part as { text: string }).text).join('');
    return text.length > 0 || mayBeEmpty ? text : undefined;
  }
  return undefined;
}

function parseToolCalls(calls: unknown, index: number, at: (field: string) => string | null): unknown[] {
  const fail = (text: string, field: string): never => {
    throw new ExampleError('invalid_tool_calls', `Message ${index}: ${text}`, index, at(field));
  };
  if (!Array.isArray(calls) || calls.length === 0) return fail(`"tool_calls" must be a non-empty list; it is ${describe(calls)}.`, 'tool_calls');
  calls.forEach((call, k) => {
    if (!isObject(call)) fail(`tool call ${k} must be an object.`, `tool_calls[${k}]`);
    const fn = (call as Record<string, unknown>).function;
    if (!isObject(fn)) return fail(`tool call ${k} has no "function" object.`, `tool_calls[${k}].function`);
    if (typeof fn.name !== 'string' || fn.name.length === 0) fail(`tool call ${k} has no function name.`, `tool_calls[${k}].function.name`);
    if (typeof fn.arguments !== 'string') fail(`tool call ${k}: "arguments" must be a JSON string.`, `tool_calls[${k}].function.arguments`);
  });
  return calls;
}

function parseTools(tools: unknown, field: string): unknown[] | undefined {
  if (tools === undefined) return undefined;
  const valid =
    Array.isArray(tools) &&
    tools.every((tool) => isObject(tool) && tool.type === 'function' && isObject(tool.function) && typeof tool.function.name === 'string' && tool.function.name.length > 0);
  if (!valid) {
    throw new ExampleError('invalid_tools', `"${field}" must be a list of {"type": "function", "function": {"name": ..., "parameters": ...}}.`, null, field);
  }
  return tools as unknown[];
}

function parsePreference(value: Record<string, unknown>): Example {
  const input = value.input;
  if (!isObject(input)) {
    throw new ExampleError('invalid_preference', `"input" must be an object with "messages"; it is ${'input' in value ? describe(input) : 'missing'}.`, null, 'input');
  }
  requireMessageList(input.messages, 'input.messages', 'invalid_preference', input);
  const messages = parseMessageList(input.messages as unknown[], 'input.messages');
  const tools = parseTools(input.tools, 'input.tools');
  const preferred = parseOutput(value, 'preferred');
  const nonPreferred = parseOutput(value, 'non_preferred');
  checkKeys(value, 'preference');
  return { format: 'preference', messages, ...(tools ? { tools } : {}), preferred, nonPreferred };
}

/** `preferred_output: [{role: "assistant", content}]`, or the older `preferred_completion: "..."`. */
function parseOutput(value: Record<string, unknown>, which: 'preferred' | 'non_preferred'): WeightedMessage {
  const completion = value[`${which}_completion`];
  if (typeof completion === 'string' && completion.length > 0 && !(`${which}_output` in value)) return { role: 'assistant', content: completion };
  const field = `${which}_output`;
  const output = value[field];
  const only = Array.isArray(output) && output.length === 1 ? output[0] : undefined;
  if (!isObject(only) || only.role !== 'assistant' || typeof only.content !== 'string' || only.content.length === 0) {
    throw new ExampleError('invalid_preference', `"${field}" must be a list holding one assistant message with non-empty content; it is ${field in value ? describe(output) : 'missing'}.`, null, field);
  }
  return { role: 'assistant', content: only.content };
}

/**
 * A JSON.parse failure as a person wants to read it: the column, what was expected, a likely
 * cause for the common slips, and the text around the spot.
 */
export function describeJsonError(text: string, error: Error): string {
  const match = / at position (\d+)/.exec(error.message);
  const position = match ? Number(match[1]) : /Unexpected end of JSON input/.test(error.message) ? text.length : null;
  let reason = error.message.replace(/ (in JSON )?at position \d+.*$/, '').replace(/, ".*" is not valid JSON$/, '');
  reason = reason.charAt(0).toLowerCase() + reason.slice(1);
  if (position === null) return `Invalid JSON: ${reason}.`;
  const before = text.slice(0, position).trimEnd();
  let hint = '';
  if (/^expected ',' or '[}\]]' after/.test(reason) && before.endsWith('"')) hint = ' (a double quote inside a string must be written \\")';
  else if (/^expected double-quoted property name/.test(reason) && before.endsWith(',')) hint = ' (a comma before "}" or "]" is not allowed in JSON)';
  else if (/^expected property name/.test(reason) && text[position] === "'") hint = ' (JSON strings and keys use double quotes)';
  else if (position >= text.length) hint = ' (the line ends before the JSON value is complete: a missing "}" or "]"?)';
  const column = [...text.slice(0, position)].length + 1;
  const near = `${position > 30 ? '…' : ''}${text.slice(Math.max(0, position - 30), position)}⟨here⟩${text.slice(position, position + 20)}${position + 20 < text.length ? '…' : ''}`;
  return `Invalid JSON at column ${column}: ${reason}${hint}, near: ${near}`;
}
