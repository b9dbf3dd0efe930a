import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { CompletionUsage } from 'openai/resources/completions';
import type {
  FunctionTool,
  Response,
  ResponseFunctionToolCall,
  ResponseOutputItem,
  ResponseOutputMessage,
  ResponseStreamEvent,
  ResponseUsage,
} from 'openai/resources/responses/responses';
import { ServiceError, invalidRequest, noSuch } from '../errors.js';
import { newId, unixSeconds } from '../ids.js';
import type { InferenceService } from '../inference/inference.js';
import type { ChatCompletionRequest, ChatMessage } from '../inference/requests.js';
import type { Db } from '../store/store.js';
import { itemsToMessages, outputToMessages } from './conversation.js';
import type { ResponseCreateRequest } from './requests.js';

/** Chat's parameter names for what the Responses API calls otherwise, so a refusal names the caller's field. */
const PARAMS: Array<[chat: string, responses: string]> = [
  ['response_format.json_schema.schema', 'text.format.schema'],
  ['response_format', 'text.format'],
  ['messages', 'input'],
  ['max_completion_tokens', 'max_output_tokens'],
];

/**
 * OpenAI's Responses API over chat completions: the input items become chat messages (after the
 * stored conversation of `previous_response_id`), the model answers through the chat service (its
 * template, tools, grammars and usage), and the answer becomes output items, or with `stream`, the
 * documented event sequence. Stored responses (`store`, the default) keep their whole
 * conversation, so a continuation never needs the responses before it.
 */
export class ResponseService {
  constructor(
    private readonly db: Db,
    private readonly inference: InferenceService,
  ) {}

  async create(orgId: string, request: ResponseCreateRequest, signal?: AbortSignal): Promise<Response | AsyncGenerator<ResponseStreamEvent>> {
    const earlier = request.previous_response_id ? await this.conversation(orgId, request.previous_response_id) : [];
    const conversation = [...earlier, ...itemsToMessages(request.input)];
    const messages: ChatMessage[] = request.instructions ? [{ role: 'system', content: request.instructions }, ...conversation] : conversation;
    const chat = chatRequest(request, messages);
    const base = responseShell(request, newId('resp_'));
    const store = request.store !== false;
    const finish = async (output: ResponseOutputItem[], usage: CompletionUsage | undefined, truncated: boolean): Promise<Response> => {
      const response: Response = {
        ...base,
        status: truncated ? 'incomplete' : 'completed',
        incomplete_details: truncated ? { reason: 'max_output_tokens' } : null,
        completed_at: unixSeconds(),
        output,
        output_text: outputText(output),
        usage: responseUsage(usage),
      };
      if (store) await this.save(orgId, response, [...conversation, ...outputToMessages(output)]);
      return response;
    };
    if (!request.stream) {
      const completion = (await renamedErrors(this.inference.chat(orgId, { ...chat, stream: false }, signal))) as ChatCompletion;
      const choice = completion.choices[0]!;
      return finish(outputItems(choice.message), completion.usage, choice.finish_reason === 'length');
    }
    const chunks = (await renamedErrors(this.inference.chat(orgId, { ...chat, stream: true, stream_options: { include_usage: true } }, signal))) as AsyncGenerator<ChatCompletionChunk>;
    return streamEvents(base, chunks, finish);
  }

  async get(orgId: string, id: string): Promise<Response> {
    const row = await this.db.selectFrom('responses').select('response').where('id', '=', id).where('org_id', '=', orgId).executeTakeFirst();
    if (!row) throw noSuch('Response', id, 'response_id');
    return JSON.parse(row.response) as Response;
  }

  /** OpenAI's answer to a delete, as its reference shows it. */
  async delete(orgId: string, id: string): Promise<{ id: string; object: 'response'; deleted: true }> {
    const result = await this.db.deleteFrom('responses').where('id', '=', id).where('org_id', '=', orgId).executeTakeFirst();
    if (Number(result.numDeletedRows) === 0) throw noSuch('Response', id, 'response_id');
    return { id, object: 'response', deleted: true };
  }

  private async conversation(orgId: string, id: string): Promise<ChatMessage[]> {
    const row = await this.db.selectFrom('responses').select('conversation').where('id', '=', id).where('org_id', '=', orgId).executeTakeFirst();
    if (!row) throw new ServiceError('not_found', `Previous response with id '${id}' not found.`, { param: 'previous_response_id' });
    return JSON.parse(row.conversation) as ChatMessage[];
  }

  private async save(orgId: string, response: Response, conversation: ChatMessage[]): Promise<void> {
    await this.db
      .insertInto('responses')
      .values({ id: response.id, org_id: orgId, created_at: response.created_at, response: JSON.stringify(response), conversation: JSON.stringify(conversation) })
      .execute();
  }
}

function chatRequest(request: ResponseCreateRequest, messages: ChatMessage[]): ChatCompletionRequest {
  const format = request.text?.format;
  const choice = request.tool_choice;
  return {
    model: request.model,
    messages: messages as ChatCompletionRequest['messages'],
    temperature: request.temperature,
    top_p: request.top_p,
    max_completion_tokens: request.max_output_tokens,
    tools: request.tools?.map((tool) => ({
      type: 'function' as const,
      function: {
        name: tool.name,
        ...(tool.description ? { description: tool.description } : {}),
        ...(tool.parameters ? { parameters: tool.parameters } : {}),
        strict: tool.strict ?? true,
      },
    })),
    tool_choice: typeof choice === 'object' && choice ? { type: 'function', function: { name: choice.name } } : choice,
    parallel_tool_calls: request.parallel_tool_calls,
    response_format:
      format?.type === 'json_schema'
        ? { type: 'json_schema', json_schema: { name: format.name, schema: format.schema, strict: format.strict ?? false, ...(format.description ? { description: format.description } : {}) } }
        : format,
    user: request.user,
  };
}

/** The parts of a response known before the model answers. */
function responseShell(request: ResponseCreateRequest, id: string): Response {
  const format = request.text?.format ?? { type: 'text' };
  const tools: FunctionTool[] = (request.tools ?? []).map((tool) => ({
    type: 'function',
    name: tool.name,
    description: tool.description ?? null,
    parameters: tool.parameters ?? null,
    strict: tool.strict ?? true,
  }));
  return {
    id,
    object: 'response',
    created_at: unixSeconds(),
    status: 'in_progress',
    error: null,
    incomplete_details: null,
    instructions: request.instructions ?? null,
    max_output_tokens: request.max_output_tokens ?? null,
    model: request.model,
    output: [],
    output_text: '',
    parallel_tool_calls: request.parallel_tool_calls !== false,
    previous_response_id: request.previous_response_id ?? null,
    temperature: request.temperature ?? 1,
    top_p: request.top_p ?? 1,
    tool_choice: typeof request.tool_choice === 'object' && request.tool_choice ? request.tool_choice : (request.tool_choice ?? 'auto'),
    tools,
    text: { format: format.type === 'json_schema' ? { ...format, strict: format.strict ?? false } : format },
    truncation: 'disabled',
    metadata: request.metadata ?? {},
    background: false,
    reasoning: { effort: null, summary: null },
    service_tier: 'default',
    ...(request.user ? { user: request.user } : {}),
  };
}

function outputItems(message: ChatCompletion.Choice['message']): ResponseOutputItem[] {
  const items: ResponseOutputItem[] = [];
  if (message.content) items.push(messageItem(newId('msg_'), message.content, 'completed'));
  for (const call of message.tool_calls ?? []) {
    if (call.type === 'function') items.push(functionCallItem(call.id, call.function.name, call.function.arguments, 'completed'));
  }
  return items;
}

function messageItem(id: string, text: string | null, status: ResponseOutputMessage['status']): ResponseOutputMessage {
  return { type: 'message', id, role: 'assistant', status, content: text === null ? [] : [{ type: 'output_text', text, annotations: [], logprobs: [] }] };
}

function functionCallItem(callId: string, name: string, args: string, status: ResponseFunctionToolCall['status']): ResponseFunctionToolCall & { id: string } {
  return { type: 'function_call', id: newId('fc_'), call_id: callId, name, arguments: args, status };
}

function outputText(output: readonly ResponseOutputItem[]): string {
  return output.flatMap((item) => (item.type === 'message' ? item.content.map((part) => (part.type === 'output_text' ? part.text : '')) : [])).join('');
}

function responseUsage(usage: CompletionUsage | undefined): ResponseUsage {
  const input = usage?.prompt_tokens ?? 0;
  const output = usage?.completion_tokens ?? 0;
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input + output,
  };
}

/**
 * Chat chunks as the Responses stream: `response.created`, `response.in_progress`, per output
 * item `response.output_item.added`, its content (`response.content_part.added`,
 * `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`, or a
 * call's `response.function_call_arguments.delta`/`.done`), `response.output_item.done`, then
 * `response.completed` (`response.incomplete` when max_output_tokens cut it short).
 */
async function* streamEvents(
  base: Response,
  chunks: AsyncGenerator<ChatCompletionChunk>,
  finish: (output: ResponseOutputItem[], usage: CompletionUsage | undefined, truncated: boolean) => Promise<Response>,
): AsyncGenerator<ResponseStreamEvent> {
  let sequence = 0;
  const seq = () => sequence++;
  // The first chunk first: a request the chat service refuses fails before any event.
  let next = await chunks.next().catch((error: unknown) => {
    throw renamed(error);
  });
  yield { type: 'response.created', sequence_number: seq(), response: base };
  yield { type: 'response.in_progress', sequence_number: seq(), response: base };
  const output: ResponseOutputItem[] = [];
  let message: { item: ResponseOutputMessage; index: number; text: string } | null = null;
  let usage: CompletionUsage | undefined;
  let truncated = false;

  function* closeMessage(): Generator<ResponseStreamEvent> {
    if (!message) return;
    const { item, index, text } = message;
    const part = { type: 'output_text' as const, text, annotations: [], logprobs: [] };
    const done: ResponseOutputMessage = { ...item, status: truncated ? 'incomplete' : 'completed', content: [part] };
    output[index] = done;
    yield { type: 'response.output_text.done', sequence_number: seq(), item_id: item.id, output_index: index, content_index: 0, text, logprobs: [] };
    yield { type: 'response.content_part.done', sequence_number: seq(), item_id: item.id, output_index: index, content_index: 0, part };
    yield { type: 'response.output_item.done', sequence_number: seq(), output_index: index, item: done };
    message = null;
  }

  for (; !next.done; next = await chunks.next()) {
    const chunk = next.value;
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    const { content, tool_calls: calls } = choice.delta;
    if (content) {
      if (!message) {
        const item = messageItem(newId('msg_'), null, 'in_progress');
        message = { item, index: output.length, text: '' };
        output.push(item);
        yield { type: 'response.output_item.added', sequence_number: seq(), output_index: message.index, item };
        const part = { type: 'output_text' as const, text: '', annotations: [], logprobs: [] };
        yield { type: 'response.content_part.added', sequence_number: seq(), item_id: item.id, output_index: message.index, content_index: 0, part };
      }
      message.text += content;
      yield { type: 'response.output_text.delta', sequence_number: seq(), item_id: message.item.id, output_index: message.index, content_index: 0, delta: content, logprobs: [] };
    }
    if (choice.finish_reason === 'length') truncated = true;
    if (calls?.length || choice.finish_reason) yield* closeMessage();
    for (const call of calls ?? []) {
      const name = call.function?.name ?? '';
      const args = call.function?.arguments ?? '';
      const index = output.length;
      const item = functionCallItem(call.id ?? '', name, '', 'in_progress');
      output.push(item);
      yield { type: 'response.output_item.added', sequence_number: seq(), output_index: index, item };
      yield { type: 'response.function_call_arguments.delta', sequence_number: seq(), item_id: item.id, output_index: index, delta: args };
      yield { type: 'response.function_call_arguments.done', sequence_number: seq(), item_id: item.id, output_index: index, name, arguments: args };
      const done: ResponseFunctionToolCall = { ...item, arguments: args, status: 'completed' };
      output[index] = done;
      yield { type: 'response.output_item.done', sequence_number: seq(), output_index: index, item: done };
    }
  }
  yield* closeMessage();
  const response = await finish(output, usage, truncated);
  yield response.status === 'incomplete'
    ? { type: 'response.incomplete', sequence_number: seq(), response }
    : { type: 'response.completed', sequence_number: seq(), response };
}

/** The chat service's refusals with the Responses API's parameter names. */
async function renamedErrors<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    throw renamed(error);
  }
}

function renamed(error: unknown): unknown {
  if (!(error instanceof ServiceError) || !error.param) return error;
  const rename = PARAMS.find(([chat]) => error.param === chat || error.param!.startsWith(`${chat}.`));
  if (!rename) return error;
  const param = rename[1] + error.param.slice(rename[0].length);
  return error.kind === 'invalid_request' ? invalidRequest(error.message, param, error.code) : new ServiceError(error.kind, error.message, { param, code: error.code });
}
