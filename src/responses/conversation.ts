import type { ChatCompletionMessageFunctionToolCall } from 'openai/resources/chat/completions';
import type { ResponseFunctionToolCall, ResponseOutputItem } from 'openai/resources/responses/responses';
import type { ChatMessage } from '../inference/requests.js';
import type { ResponseInputItem } from './requests.js';

/**
 * Responses items as chat messages, the form a model's chat template renders: messages stay
 * messages, consecutive function calls become one assistant turn's `tool_calls`, and each
 * function call output a `tool` message answering its call.
 */
export function itemsToMessages(input: string | readonly ResponseInputItem[]): ChatMessage[] {
  if (typeof input === 'string') return [{ role: 'user', content: input }];
  const messages: ChatMessage[] = [];
  for (const item of input) {
    if ('role' in item) {
      const text = typeof item.content === 'string' ? item.content : item.content.map((part) => part.text).join('');
      messages.push({ role: item.role, content: text });
    } else if (item.type === 'function_call') {
      const call: ChatCompletionMessageFunctionToolCall = { id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } };
      const last = messages.at(-1);
      // A call right after an assistant turn (its text, or another call) belongs to that turn.
      if (last?.role === 'assistant') last.tool_calls = [...(last.tool_calls ?? []), call];
      else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else {
      messages.push({ role: 'tool', tool_call_id: item.call_id, content: item.output });
    }
  }
  return messages;
}

/** A response's output as the assistant turn that continues its conversation. */
export function outputToMessages(output: readonly ResponseOutputItem[]): ChatMessage[] {
  const text = output.flatMap((item) => (item.type === 'message' ? item.content.map((part) => (part.type === 'output_text' ? part.text : '')) : [])).join('');
  const calls = output
    .filter((item): item is ResponseFunctionToolCall => item.type === 'function_call')
    .map((item): ChatCompletionMessageFunctionToolCall => ({ id: item.call_id, type: 'function', function: { name: item.name, arguments: item.arguments } }));
  if (!text && calls.length === 0) return [];
  return [{ role: 'assistant', content: text || null, ...(calls.length ? { tool_calls: calls } : {}) }];
}
