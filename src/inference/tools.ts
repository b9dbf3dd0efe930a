import type { ChatCompletionMessageFunctionToolCall } from 'openai/resources/chat/completions';
import { invalidRequest } from '../errors.js';
import { newId } from '../ids.js';
import { type ParsedToolCall, type ToolCallFormat, callOpener, parseToolCalls } from '../tokenizer/tool-calls.js';
import type { CallableFunction } from './grammars.js';
import type { ChatCompletionRequest, ChatTool } from './requests.js';

/** What a chat request asks of tools, `tools`/`tool_choice` and the legacy `functions`/`function_call` alike. */
export interface ToolUse {
  /** The tools as the chat template receives them (OpenAI's `{type: "function", function}`). */
  tools: ChatTool[];
  /** `none`: the model sees the tools but its answer is text; `required`: it must call one; a name: that one. */
  choice: 'none' | 'auto' | 'required' | { name: string };
  parallel: boolean;
  /** Asked with `functions`: the answer is a `function_call` rather than `tool_calls`. */
  legacy: boolean;
}

/** The request's tools, checked against its choice; null when it has none. */
export function toolUse(request: ChatCompletionRequest): ToolUse | null {
  if (request.tools && request.functions) throw invalidRequest('Send either tools or functions (legacy), not both.', 'functions');
  const legacy = !request.tools && !!request.functions;
  const tools: ChatTool[] = request.tools ?? (request.functions ?? []).map((fn) => ({ type: 'function' as const, function: fn }));
  const choiceParam = legacy ? 'function_call' : 'tool_choice';
  const given = legacy ? request.function_call : request.tool_choice;
  if (tools.length === 0) {
    if (given) throw invalidRequest(`'${choiceParam}' is only allowed when '${legacy ? 'functions' : 'tools'}' are specified.`, choiceParam);
    return null;
  }
  let choice: ToolUse['choice'] = 'auto';
  if (typeof given === 'string') choice = given;
  else if (given) {
    const name = 'function' in given ? given.function.name : given.name;
    if (!tools.some((tool) => tool.function.name === name)) {
      throw invalidRequest(`'${choiceParam}' names the function '${name}', which is not among the ${legacy ? 'functions' : 'tools'}.`, choiceParam);
    }
    choice = { name };
  }
  return { tools, choice, parallel: !legacy && request.parallel_tool_calls !== false, legacy };
}

/** The functions a forced choice allows, with the schemas their arguments must match (exactly when `strict`, else leniently). */
export function forcedFunctions(use: ToolUse): CallableFunction[] | null {
  if (use.choice === 'none' || use.choice === 'auto') return null;
  const name = typeof use.choice === 'object' ? use.choice.name : null;
  return use.tools
    .filter((tool) => name === null || tool.function.name === name)
    .map((tool) => ({ name: tool.function.name, parameters: tool.function.parameters ?? { type: 'object' }, strict: tool.function.strict === true }));
}

export function toolCallsFor(calls: readonly ParsedToolCall[]): ChatCompletionMessageFunctionToolCall[] {
  return calls.map((call) => ({ id: newId('call_'), type: 'function', function: { name: call.name, arguments: call.arguments } }));
}

/**
 * One streamed choice's text split into content, sent as it comes, and tool calls, held until
 * the answer ends and parsed then. Text that may be the start of a call is held back until it
 * is clear whether it is one.
 */
export class ToolCallStream {
  private held = '';
  private state: 'undecided' | 'content' | 'call' = 'undecided';
  private readonly opener: { text: string; atStart: boolean };

  constructor(private readonly format: ToolCallFormat) {
    this.opener = callOpener(format);
  }

  /** The content that can be sent now. */
  push(text: string): string {
    if (this.state === 'content') return text;
    this.held += text;
    if (this.state === 'call') return '';
    const { text: opener, atStart } = this.opener;
    if (atStart) {
      const start = this.held.trimStart();
      if (!start) return '';
      this.state = start.startsWith(opener) ? 'call' : 'content';
      return this.state === 'content' ? this.release(this.held.length) : '';
    }
    const at = this.held.indexOf(opener);
    if (at >= 0) {
      this.state = 'call';
      return this.release(at);
    }
    let keep = Math.min(opener.length - 1, this.held.length);
    while (keep > 0 && !opener.startsWith(this.held.slice(this.held.length - keep))) keep--;
    return this.release(this.held.length - keep);
  }

  /** At the end: the calls, or when the held text is no call, that text as the rest of the content. */
  finish(): { content: string; calls: ParsedToolCall[] } {
    const rest = this.held;
    this.held = '';
    const parsed = this.state === 'call' ? parseToolCalls(this.format, rest) : null;
    return parsed ? { content: '', calls: parsed.calls } : { content: rest, calls: [] };
  }

  private release(length: number): string {
    const out = this.held.slice(0, length);
    this.held = this.held.slice(length);
    return out;
  }
}
