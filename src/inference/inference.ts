import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionMessage,
  ChatCompletionTokenLogprob,
} from 'openai/resources/chat/completions';
import type { Completion, CompletionChoice, CompletionUsage } from 'openai/resources/completions';
import { GenerationError, type TokenLogprob } from '../engine/serve-process.js';
import { ServiceError, invalidRequest } from '../errors.js';
import { newId, unixSeconds } from '../ids.js';
import { modelContextLength } from '../models/base-models.js';
import type { ServableModel } from '../models/models.js';
import { type WeightedMessage, encodeChat } from '../tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { type ToolCallFormat, parseToolCalls } from '../tokenizer/tool-calls.js';
import { ToolCallStream, type ToolUse, forcedFunctions, toolCallsFor, toolUse } from './tools.js';
import type { UsageService } from '../usage/usage.js';
import type { BackendLease, OutputConstraint, ServingChoice } from './backend.js';
import type { ModelServing, ServedModel } from './serving.js';
import { type ChoiceEvent, type ChoiceRequest, type FinishReason, Generation } from './generation.js';
import type { ChatCompletionRequest, ChatMessage, ChatTool, CompletionRequest, SamplingRequest } from './requests.js';

/** OpenAI's name for the backend configuration that answered: the engine, or llama.cpp and its quantization. */
const systemFingerprint = (choice: ServingChoice) => (choice.backend === 'engine' ? 'fp_tunelab' : `fp_tunelab_llamacpp_${choice.quantization}`);
const MODELS_KEPT = 16;

interface ModelText {
  tokenizer: ModelTokenizer;
  /** max_position_embeddings, or null when the config does not say. */
  context: number | null;
}

/**
 * Chat and legacy completions for base models, fine-tunes and checkpoints: the model's own
 * tokenizer and chat template (the same encoding training used) turn messages into token ids, a
 * backend (`ModelServing`: the engine or llama.cpp) generates, and the ids come back as text.
 * Every request's tokens are recorded as the organization's usage.
 */
export class InferenceService {
  private readonly texts = new Map<string, ModelText>();

  constructor(
    private readonly serving: ModelServing,
    private readonly usage: UsageService,
    private readonly onError: (message: string, error: unknown) => void = () => {},
  ) {}

  /** A `chat.completion`, or with `stream`, its chunks. Problems with the request are thrown by the first `next()`, before any chunk. */
  async chat(
    orgId: string,
    request: ChatCompletionRequest,
    signal?: AbortSignal,
  ): Promise<ChatCompletion | AsyncGenerator<ChatCompletionChunk>> {
    const served = await this.serving.resolve(orgId, request.model);
    const { tokenizer, context } = this.modelText(served.model);
    if (!tokenizer.hasChatTemplate) {
      throw invalidRequest(
        `The model \`${request.model}\` has no chat template; use /v1/completions with a prompt instead.`,
        'model',
      );
    }
    if (request.top_logprobs !== null && request.top_logprobs !== undefined && request.logprobs !== true) {
      throw invalidRequest('top_logprobs requires logprobs to be true.', 'top_logprobs');
    }
    const tools = toolUse(request);
    const format = tools ? tokenizer.toolCallFormat : null;
    if (tools && !format) {
      throw invalidRequest(`The model \`${request.model}\`'s chat template does not render tools.`, tools.legacy ? 'functions' : 'tools');
    }
    const prompt = renderChat(tokenizer, request.messages, tools?.tools);
    const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? null;
    const plan = planRun(served, tokenizer, context, [prompt], maxTokens, request, 'messages');
    plan.constraint = chatConstraint(request, tools, format, tokenizer);
    plan.logprobs = request.logprobs ? (request.top_logprobs ?? 0) : null;
    // Answers are read for calls unless the model may not call (tool_choice none).
    const callFormat = tools && tools.choice !== 'none' ? format : null;
    const id = newId('chatcmpl-');
    const head = { id, created: unixSeconds(), model: request.model, system_fingerprint: systemFingerprint(served.choice) };
    const logprobsOf = (tokens: TokenLogprob[]) => (plan.logprobs === null ? null : { content: tokens.map((t) => chatLogprob(tokenizer, t)), refusal: null });
    if (!request.stream) {
      const { texts, finishReasons, logprobs } = await this.collect(orgId, plan, id, signal);
      return {
        ...head,
        object: 'chat.completion',
        choices: texts.map((text, index) => {
          const parsed = callFormat ? parseToolCalls(callFormat, text) : null;
          const answer = answerMessage(text, parsed, tools?.legacy ?? false);
          return { index, message: answer.message, logprobs: logprobsOf(logprobs[index]!), finish_reason: answer.finishReason ?? finishReasons[index]! };
        }),
        usage: plan.usage,
      };
    }
    const includeUsage = request.stream_options?.include_usage === true;
    const chunk = (choices: ChatCompletionChunk['choices'], usage?: CompletionUsage): ChatCompletionChunk => ({
      ...head,
      object: 'chat.completion.chunk',
      choices,
      ...(includeUsage ? { usage: usage ?? null } : {}),
    });
    const splitters = callFormat ? Array.from({ length: plan.choiceCount }, () => new ToolCallStream(callFormat)) : null;
    return this.stream(orgId, plan, id, signal, {
      opening: (index) => [chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }])],
      event: (event) => {
        const splitter = splitters?.[event.index];
        const content = splitter ? splitter.push(event.text) : event.text;
        const out: ChatCompletionChunk[] = [];
        if (content || event.logprobs.length) {
          out.push(chunk([{ index: event.index, delta: { content }, logprobs: logprobsOf(event.logprobs), finish_reason: null }]));
        }
        if (!event.finishReason) return out;
        const rest = splitter?.finish() ?? { content: '', calls: [] };
        if (rest.content) out.push(chunk([{ index: event.index, delta: { content: rest.content }, logprobs: null, finish_reason: null }]));
        let finishReason: ChatCompletionChunk.Choice['finish_reason'] = event.finishReason;
        if (rest.calls.length && tools?.legacy) {
          const call = rest.calls[0]!;
          out.push(chunk([{ index: event.index, delta: { function_call: { name: call.name, arguments: call.arguments } }, logprobs: null, finish_reason: null }]));
          finishReason = 'function_call';
        } else if (rest.calls.length) {
          const calls = toolCallsFor(rest.calls).map((call, i) => ({ index: i, ...call }));
          out.push(chunk([{ index: event.index, delta: { tool_calls: calls }, logprobs: null, finish_reason: null }]));
          finishReason = 'tool_calls';
        }
        out.push(chunk([{ index: event.index, delta: {}, logprobs: null, finish_reason: finishReason }]));
        return out;
      },
      closing: () => (includeUsage ? [chunk([], plan.usage)] : []),
    });
  }

  /** A `text_completion` (legacy: a prompt in, text out), or with `stream`, its chunks. */
  async complete(orgId: string, request: CompletionRequest, signal?: AbortSignal): Promise<Completion | AsyncGenerator<Completion>> {
    const served = await this.serving.resolve(orgId, request.model);
    const { tokenizer, context } = this.modelText(served.model);
    // As prompt/completion examples were trained: the prompt with what the tokenizer adds at the start.
    const prompts = promptList(request.prompt).map((prompt) => {
      const ids = typeof prompt === 'string' ? tokenizer.encodeWithSpecialTokens(prompt) : prompt;
      // An empty prompt starts a new document, which models learned to begin after their end-of-text token.
      if (ids.length > 0) return ids;
      if (tokenizer.endOfTurnIds[0] === undefined) throw invalidRequest('The prompt is empty, and this model has no token to start from.', 'prompt');
      return [tokenizer.endOfTurnIds[0]];
    });
    const plan = planRun(served, tokenizer, context, prompts, request.max_tokens, request, 'prompt');
    plan.logprobs = request.logprobs ?? null;
    const id = newId('cmpl-');
    const head = { id, created: unixSeconds(), model: request.model, system_fingerprint: systemFingerprint(served.choice), object: 'text_completion' as const };
    const echoes = promptList(request.prompt).map((prompt) =>
      !request.echo ? '' : typeof prompt === 'string' ? prompt : tokenizer.decode(prompt, { skipSpecialTokens: true }),
    );
    const echo = (index: number) => echoes[Math.floor(index / plan.n)]!;
    // Where the next token's text starts in each choice's text (`text_offset`).
    const offsets = Array.from({ length: plan.choiceCount }, (_, index) => echo(index).length);
    const logprobsOf = (index: number, tokens: TokenLogprob[]) => {
      if (plan.logprobs === null) return null;
      const offset = offsets[index]!;
      const result = completionLogprobs(tokenizer, tokens, offset);
      offsets[index] = offset + result.tokens!.reduce((sum, token) => sum + token.length, 0);
      return result;
    };
    if (!request.stream) {
      const { texts, finishReasons, logprobs } = await this.collect(orgId, plan, id, signal);
      return {
        ...head,
        choices: texts.map((text, index) => ({
          index,
          text: echo(index) + text,
          logprobs: logprobsOf(index, logprobs[index]!),
          finish_reason: finishReasons[index]!,
        })),
        usage: plan.usage,
      };
    }
    const includeUsage = request.stream_options?.include_usage === true;
    // The SDK's type has no null usage; the spec sends `usage: null` on every chunk but the last.
    const chunk = (choices: Completion['choices'], usage?: CompletionUsage): Completion => ({
      ...head,
      choices,
      ...(includeUsage ? { usage: (usage ?? null) as CompletionUsage } : {}),
    });
    return this.stream(orgId, plan, id, signal, {
      opening: (index) => (request.echo ? [chunk([{ index, text: echo(index), logprobs: null, finish_reason: null as never }])] : []),
      event: (event) => [
        chunk([{ index: event.index, text: event.text, logprobs: logprobsOf(event.index, event.logprobs), finish_reason: event.finishReason as never }]),
      ],
      closing: () => (includeUsage ? [chunk([], plan.usage)] : []),
    });
  }

  /** The models loaded by the backends, and how many generations each is working on. */
  status(): Array<{ modelDir: string; generations: number }> {
    return this.serving.status();
  }

  private async collect(orgId: string, plan: Plan, id: string, signal: AbortSignal | undefined) {
    const texts = Array.from({ length: plan.choiceCount }, () => '');
    const finishReasons: FinishReason[] = Array.from({ length: plan.choiceCount }, () => 'length');
    const logprobs = Array.from({ length: plan.choiceCount }, (): TokenLogprob[] => []);
    try {
      for await (const event of this.run(plan, signal)) {
        texts[event.index] += event.text;
        logprobs[event.index]!.push(...event.logprobs);
        if (event.finishReason) finishReasons[event.index] = event.finishReason;
      }
    } finally {
      await this.record(orgId, plan, id);
    }
    return { texts, finishReasons, logprobs };
  }

  /**
   * The chunks of a streamed completion. Nothing is yielded before the first generation event, so
   * a request the model server refuses fails before the response has begun.
   */
  private async *stream<Chunk>(
    orgId: string,
    plan: Plan,
    id: string,
    signal: AbortSignal | undefined,
    shape: { opening(index: number): Chunk[]; event(event: ChoiceEvent): Chunk[]; closing(): Chunk[] },
  ): AsyncGenerator<Chunk> {
    const events = this.run(plan, signal);
    try {
      let next = await events.next();
      for (let index = 0; index < plan.choiceCount; index++) yield* shape.opening(index);
      for (; !next.done; next = await events.next()) yield* shape.event(next.value);
      yield* shape.closing();
    } finally {
      await events.return(undefined);
      await this.record(orgId, plan, id);
    }
  }

  /**
   * Waits for the model's backend (loading the model if need be) and generates every choice, `n`
   * per prompt. The model is held only while this runs: an abandoned stream gives it back.
   */
  private async *run(plan: Plan, signal: AbortSignal | undefined): AsyncGenerator<ChoiceEvent> {
    let lease: BackendLease;
    try {
      lease = await plan.served.acquire(signal);
    } catch (error) {
      throw asServiceError(error, plan);
    }
    let generation: Generation | null = null;
    try {
      const vocab = lease.info.vocabSize;
      if (plan.prompts.some((ids) => ids.some((id) => id >= vocab))) {
        throw invalidRequest(`Token ids in '${plan.promptParam}' must be below the model's vocabulary size, ${vocab}.`, plan.promptParam);
      }
      plan.started = true;
      generation = new Generation(lease.generator, plan.tokenizer, choiceRequests(plan, lease.info.contextLength), plan.stops, signal);
      yield* generation.events();
    } catch (error) {
      throw asServiceError(error, plan);
    } finally {
      lease.release();
      if (generation) {
        plan.usage.completion_tokens = generation.completionTokens;
        plan.usage.total_tokens = plan.usage.prompt_tokens + generation.completionTokens;
      }
    }
  }

  /** A request refused before generating is not charged; one cut short is, for what it used. */
  private async record(orgId: string, plan: Plan, id: string): Promise<void> {
    if (!plan.started) return;
    const usage = plan.usage;
    await this.usage
      .recordInference({ orgId, model: plan.modelName, inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens, sourceId: id })
      .catch((error: unknown) => this.onError(`recording the usage of ${id} failed`, error));
  }

  /** The model folder's tokenizer and context length, read once per folder rather than per request. */
  private modelText(model: ServableModel): ModelText {
    let text = this.texts.get(model.weights);
    if (!text) {
      text = { tokenizer: ModelTokenizer.load(model.weights), context: modelContextLength(model.weights) };
      if (this.texts.size >= MODELS_KEPT) this.texts.delete(this.texts.keys().next().value!);
    } else this.texts.delete(model.weights);
    // Re-inserted: a Map keeps insertion order, so the first key is the least recently used.
    this.texts.set(model.weights, text);
    return text;
  }
}

/** A completion request checked and tokenized, ready to generate; `usage` fills in as it does. */
interface Plan {
  served: ServedModel;
  modelName: string;
  tokenizer: ModelTokenizer;
  prompts: number[][];
  promptParam: string;
  maxTokens: number | null;
  request: SamplingRequest;
  n: number;
  choiceCount: number;
  stops: string[];
  /** What the output must match, and the parameter that asked for it. */
  constraint: { constraint: OutputConstraint; param: string } | null;
  /** Alternatives per token to report with log-probabilities, or null for none. */
  logprobs: number | null;
  usage: CompletionUsage;
  /** Generation began (the prompt went to the engine). */
  started: boolean;
}

function planRun(
  served: ServedModel,
  tokenizer: ModelTokenizer,
  context: number | null,
  prompts: number[][],
  maxTokens: number | null,
  request: SamplingRequest,
  promptParam: string,
): Plan {
  if (context !== null) for (const ids of prompts) checkContext(ids.length, maxTokens, context, promptParam);
  const n = request.n ?? 1;
  const promptTokens = prompts.reduce((sum, ids) => sum + ids.length, 0);
  return {
    served,
    modelName: request.model,
    tokenizer,
    prompts,
    promptParam,
    maxTokens,
    request,
    n,
    choiceCount: prompts.length * n,
    stops: request.stop === null || request.stop === undefined ? [] : [request.stop].flat(),
    constraint: null,
    logprobs: null,
    usage: { prompt_tokens: promptTokens, completion_tokens: 0, total_tokens: promptTokens },
    started: false,
  };
}

function choiceRequests(plan: Plan, contextLength: number): ChoiceRequest[] {
  const { request, n } = plan;
  return plan.prompts.flatMap((ids, p) => {
    const limit = Math.max(1, contextLength - ids.length);
    return Array.from({ length: n }, (_, i): ChoiceRequest => ({
      index: p * n + i,
      tokens: {
        inputIds: ids,
        maxTokens: Math.min(plan.maxTokens ?? limit, limit),
        temperature: request.temperature ?? 1,
        topP: request.top_p ?? 1,
        // Each choice its own stream of randomness, the same for the same seed.
        seed: request.seed === null || request.seed === undefined ? null : request.seed + p * n + i,
        stopIds: plan.tokenizer.endOfTurnIds,
        presencePenalty: request.presence_penalty ?? 0,
        frequencyPenalty: request.frequency_penalty ?? 0,
        constraint: plan.constraint?.constraint ?? null,
        logprobs: plan.logprobs,
      },
    }));
  });
}

/** OpenAI's message for a prompt that does not fit, with the numbers. */
function checkContext(promptTokens: number, maxTokens: number | null, context: number, param: string): void {
  const asked = promptTokens + (maxTokens ?? 1);
  if (asked <= context) return;
  const parts = maxTokens === null ? `${promptTokens} in the ${param}` : `${promptTokens} in the ${param}, ${maxTokens} in the completion`;
  throw invalidRequest(
    `This model's maximum context length is ${context} tokens. However, you requested ${asked} tokens (${parts}). ` +
      `Please reduce the length of the ${param} or completion.`,
    param,
    'context_length_exceeded',
  );
}

function renderChat(tokenizer: ModelTokenizer, messages: readonly ChatMessage[], tools: ChatTool[] | undefined): number[] {
  const templateMessages: WeightedMessage[] = messages.map((message) => {
    const text =
      typeof message.content === 'string' || message.content == null ? (message.content ?? null) : message.content.map((part) => part.text ?? '').join('');
    // Chat templates know system, user, assistant and tool; OpenAI's developer role is the system's successor.
    // A legacy function result is a tool result; a legacy function_call is a one-call tool_calls.
    const role = message.role === 'developer' ? 'system' : message.role === 'function' ? 'tool' : message.role;
    const rendered: WeightedMessage = { role, content: text };
    if ('name' in message && message.name !== undefined) rendered.name = message.name;
    if ('tool_calls' in message && message.tool_calls) rendered.tool_calls = message.tool_calls;
    if ('function_call' in message && message.function_call) {
      rendered.tool_calls = [{ id: 'call_0', type: 'function', function: message.function_call }];
    }
    if ('tool_call_id' in message) rendered.tool_call_id = message.tool_call_id;
    return rendered;
  });
  try {
    return encodeChat(tokenizer, templateMessages, { addGenerationPrompt: true, tools }).ids;
  } catch (error) {
    throw invalidRequest(`The model's chat template cannot render these messages: ${(error as Error).message}`, 'messages');
  }
}

function promptList(prompt: CompletionRequest['prompt']): Array<string | number[]> {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((item): item is number => typeof item === 'number')) return [prompt as number[]];
  return prompt as Array<string | number[]>;
}

/**
 * What a chat answer must match: a forced tool call (`tool_choice` `required` or a named
 * function), else a JSON `response_format`. A `json_schema` without `strict` is followed as far
 * as the backend implements it (leniently) rather than refused.
 */
function chatConstraint(request: ChatCompletionRequest, tools: ToolUse | null, format: ToolCallFormat | null, tokenizer: ModelTokenizer): Plan['constraint'] {
  const forced = tools ? forcedFunctions(tools) : null;
  if (forced && format) {
    const mistralCallsToken = format === 'mistral' ? (tokenizer.encode('[TOOL_CALLS]')[0] ?? null) : null;
    return {
      constraint: { type: 'tool_calls', format, functions: forced, parallel: tools!.parallel, mistralCallsToken },
      param: tools!.legacy ? 'functions' : 'tools',
    };
  }
  const responseFormat = request.response_format;
  if (responseFormat?.type === 'json_object') return { constraint: { type: 'json_object' }, param: 'response_format' };
  if (responseFormat?.type === 'json_schema') {
    const { schema, strict } = responseFormat.json_schema;
    const constraint: OutputConstraint = schema ? { type: 'json_schema', schema, lenient: !strict } : { type: 'json_object' };
    return { constraint, param: 'response_format.json_schema.schema' };
  }
  return null;
}

/** An answer's message: its calls (as `tool_calls`, or a legacy `function_call`) when it made any, else its text. */
function answerMessage(
  text: string,
  parsed: ReturnType<typeof parseToolCalls>,
  legacy: boolean,
): { message: ChatCompletionMessage; finishReason: 'tool_calls' | 'function_call' | null } {
  if (!parsed) return { message: { role: 'assistant', content: text, refusal: null }, finishReason: null };
  const content = parsed.content || null;
  if (legacy) {
    const call = parsed.calls[0]!;
    return { message: { role: 'assistant', content, refusal: null, function_call: call }, finishReason: 'function_call' };
  }
  return { message: { role: 'assistant', content, refusal: null, tool_calls: toolCallsFor(parsed.calls) }, finishReason: 'tool_calls' };
}

/** A token's log-probability as chat reports it: the token's text and bytes, and its alternatives'. */
function chatLogprob(tokenizer: ModelTokenizer, token: TokenLogprob): ChatCompletionTokenLogprob {
  const entry = (id: number, logprob: number) => ({ token: tokenizer.decode([id]), logprob, bytes: tokenizer.tokenBytes(id) });
  return { ...entry(token.token, token.logprob), top_logprobs: token.top.map(([id, logprob]) => entry(id, logprob)) };
}

/** Legacy completions' log-probabilities: parallel lists per token, alternatives keyed by their text. */
function completionLogprobs(tokenizer: ModelTokenizer, tokens: TokenLogprob[], offset: number): CompletionChoice.Logprobs {
  const texts = tokens.map((token) => tokenizer.decode([token.token]));
  const textOffset: number[] = [];
  for (const text of texts) {
    textOffset.push(offset);
    offset += text.length;
  }
  return {
    tokens: texts,
    token_logprobs: tokens.map((token) => token.logprob),
    top_logprobs: tokens.map((token) => Object.fromEntries(token.top.map(([id, logprob]) => [tokenizer.decode([id]), logprob]))),
    text_offset: textOffset,
  };
}

/** What an engine's refusal means to the caller. */
function asServiceError(error: unknown, plan: Plan): unknown {
  if (!(error instanceof GenerationError)) return error;
  const model = plan.modelName;
  switch (error.code) {
    case 'invalid_grammar':
      return invalidRequest(`Invalid schema: ${error.message}`, plan.constraint?.param ?? null);
    case 'unsupported':
      return invalidRequest(error.message, plan.constraint?.param ?? null);
    case 'cancelled':
      return error;
    case 'model_loading':
      return new ServiceError('unavailable', `The model \`${model}\` is still loading. ${error.message}`, { code: 'model_loading' });
    // Worth a retry: the next request starts a new model server.
    case 'engine_stopped':
      return new ServiceError('unavailable', `The model \`${model}\` could not answer: ${error.message}`, { code: 'engine_stopped' });
    case 'invalid_request':
      return invalidRequest(error.message);
    default:
      // A broken adapter or an engine fault fails again on retry.
      return new ServiceError('server', `The model \`${model}\` could not generate: ${error.message}`, { code: error.code });
  }
}
