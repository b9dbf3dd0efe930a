import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { Completion, CompletionUsage } from 'openai/resources/completions';
import { GenerationError } from '../engine/serve-process.js';
import type { ServeLease, ServePool } from '../engine/serve-pool.js';
import { ServiceError, invalidRequest } from '../errors.js';
import { newId, unixSeconds } from '../ids.js';
import { modelContextLength } from '../models/base-models.js';
import type { ModelService, ServableModel } from '../models/models.js';
import { type WeightedMessage, encodeChat } from '../tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import type { UsageService } from '../usage/usage.js';
import { type ChoiceEvent, type ChoiceRequest, type FinishReason, Generation } from './generation.js';
import type { ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingRequest } from './requests.js';

const SYSTEM_FINGERPRINT = 'fp_tunelab';
const MODELS_KEPT = 16;

interface ModelText {
  tokenizer: ModelTokenizer;
  /** max_position_embeddings, or null when the config does not say. */
  context: number | null;
}

/**
 * Chat and legacy completions for base models, fine-tunes and checkpoints: the model's own
 * tokenizer and chat template (the same encoding training used) turn messages into token ids, a
 * model server (`ServePool`) generates, and the ids come back as text. Every request's tokens are
 * recorded as the organization's usage.
 */
export class InferenceService {
  private readonly texts = new Map<string, ModelText>();

  constructor(
    private readonly models: ModelService,
    private readonly pool: ServePool,
    private readonly usage: UsageService,
    private readonly onError: (message: string, error: unknown) => void = () => {},
  ) {}

  /** A `chat.completion`, or with `stream`, its chunks. Problems with the request are thrown by the first `next()`, before any chunk. */
  async chat(
    orgId: string,
    request: ChatCompletionRequest,
    signal?: AbortSignal,
  ): Promise<ChatCompletion | AsyncGenerator<ChatCompletionChunk>> {
    const model = await this.models.servable(orgId, request.model);
    const { tokenizer, context } = this.modelText(model);
    if (!tokenizer.hasChatTemplate) {
      throw invalidRequest(
        `The model \`${request.model}\` has no chat template; use /v1/completions with a prompt instead.`,
        'model',
      );
    }
    const prompt = renderChat(tokenizer, request.messages);
    const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? null;
    const plan = planRun(model, tokenizer, context, [prompt], maxTokens, request, 'messages');
    const id = newId('chatcmpl-');
    const head = { id, created: unixSeconds(), model: request.model, system_fingerprint: SYSTEM_FINGERPRINT };
    if (!request.stream) {
      const { texts, finishReasons } = await this.collect(orgId, plan, id, signal);
      return {
        ...head,
        object: 'chat.completion',
        choices: texts.map((content, index) => ({
          index,
          message: { role: 'assistant', content, refusal: null },
          logprobs: null,
          finish_reason: finishReasons[index]!,
        })),
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
    return this.stream(orgId, plan, id, signal, {
      opening: (index) => [chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }])],
      event: (event) => [
        ...(event.text ? [chunk([{ index: event.index, delta: { content: event.text }, logprobs: null, finish_reason: null }])] : []),
        ...(event.finishReason ? [chunk([{ index: event.index, delta: {}, logprobs: null, finish_reason: event.finishReason }])] : []),
      ],
      closing: () => (includeUsage ? [chunk([], plan.usage)] : []),
    });
  }

  /** A `text_completion` (legacy: a prompt in, text out), or with `stream`, its chunks. */
  async complete(orgId: string, request: CompletionRequest, signal?: AbortSignal): Promise<Completion | AsyncGenerator<Completion>> {
    const model = await this.models.servable(orgId, request.model);
    const { tokenizer, context } = this.modelText(model);
    // As prompt/completion examples were trained: the prompt with what the tokenizer adds at the start.
    const prompts = promptList(request.prompt).map((prompt) => {
      const ids = typeof prompt === 'string' ? tokenizer.encodeWithSpecialTokens(prompt) : prompt;
      // An empty prompt starts a new document, which models learned to begin after their end-of-text token.
      if (ids.length > 0) return ids;
      if (tokenizer.endOfTurnIds[0] === undefined) throw invalidRequest('The prompt is empty, and this model has no token to start from.', 'prompt');
      return [tokenizer.endOfTurnIds[0]];
    });
    const plan = planRun(model, tokenizer, context, prompts, request.max_tokens, request, 'prompt');
    const id = newId('cmpl-');
    const head = { id, created: unixSeconds(), model: request.model, system_fingerprint: SYSTEM_FINGERPRINT, object: 'text_completion' as const };
    const echoes = promptList(request.prompt).map((prompt) =>
      !request.echo ? '' : typeof prompt === 'string' ? prompt : tokenizer.decode(prompt, { skipSpecialTokens: true }),
    );
    const echo = (index: number) => echoes[Math.floor(index / plan.n)]!;
    if (!request.stream) {
      const { texts, finishReasons } = await this.collect(orgId, plan, id, signal);
      return {
        ...head,
        choices: texts.map((text, index) => ({ index, text: echo(index) + text, logprobs: null, finish_reason: finishReasons[index]! })),
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
      event: (event) => [chunk([{ index: event.index, text: event.text, logprobs: null, finish_reason: event.finishReason as never }])],
      closing: () => (includeUsage ? [chunk([], plan.usage)] : []),
    });
  }

  /** The model servers running, and how many generations each is working on. */
  status(): Array<{ modelDir: string; generations: number }> {
    return this.pool.status();
  }

  private async collect(orgId: string, plan: Plan, id: string, signal: AbortSignal | undefined) {
    const texts = Array.from({ length: plan.choiceCount }, () => '');
    const finishReasons: FinishReason[] = Array.from({ length: plan.choiceCount }, () => 'length');
    try {
      for await (const event of this.run(plan, signal)) {
        texts[event.index] += event.text;
        if (event.finishReason) finishReasons[event.index] = event.finishReason;
      }
    } finally {
      await this.record(orgId, plan, id);
    }
    return { texts, finishReasons };
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
   * Waits for the model's server (loading it if need be) and generates every choice, `n` per
   * prompt. The server is held only while this runs: an abandoned stream gives it back.
   */
  private async *run(plan: Plan, signal: AbortSignal | undefined): AsyncGenerator<ChoiceEvent> {
    let lease: ServeLease;
    try {
      lease = await this.pool.acquire(plan.model.weights, signal);
    } catch (error) {
      throw asServiceError(error, plan.modelName);
    }
    let generation: Generation | null = null;
    try {
      const vocab = lease.info.vocabSize;
      if (plan.prompts.some((ids) => ids.some((id) => id >= vocab))) {
        throw invalidRequest(`Token ids in '${plan.promptParam}' must be below the model's vocabulary size, ${vocab}.`, plan.promptParam);
      }
      plan.started = true;
      generation = new Generation(lease.process, plan.tokenizer, choiceRequests(plan, lease.info.contextLength), plan.stops, signal);
      yield* generation.events();
    } catch (error) {
      throw asServiceError(error, plan.modelName);
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
  model: ServableModel;
  modelName: string;
  tokenizer: ModelTokenizer;
  prompts: number[][];
  promptParam: string;
  maxTokens: number | null;
  request: SamplingRequest;
  n: number;
  choiceCount: number;
  stops: string[];
  usage: CompletionUsage;
  /** Generation began (the prompt went to the engine). */
  started: boolean;
}

function planRun(
  model: ServableModel,
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
    model,
    modelName: request.model,
    tokenizer,
    prompts,
    promptParam,
    maxTokens,
    request,
    n,
    choiceCount: prompts.length * n,
    stops: request.stop === null || request.stop === undefined ? [] : [request.stop].flat(),
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
      engine: {
        inputIds: ids,
        adapter: plan.model.adapter,
        maxTokens: Math.min(plan.maxTokens ?? limit, limit),
        temperature: request.temperature ?? 1,
        topP: request.top_p ?? 1,
        // Each choice its own stream of randomness, the same for the same seed.
        seed: request.seed === null || request.seed === undefined ? null : request.seed + p * n + i,
        stopIds: plan.tokenizer.endOfTurnIds,
        presencePenalty: request.presence_penalty ?? 0,
        frequencyPenalty: request.frequency_penalty ?? 0,
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

function renderChat(tokenizer: ModelTokenizer, messages: readonly ChatMessage[]): number[] {
  const templateMessages: WeightedMessage[] = messages.map((message) => {
    const text =
      typeof message.content === 'string' || message.content == null ? (message.content ?? null) : message.content.map((part) => part.text ?? '').join('');
    // Chat templates know system, user, assistant and tool; OpenAI's developer role is the system's successor.
    const role = message.role === 'developer' ? 'system' : message.role;
    const rendered: WeightedMessage = { role, content: text };
    if ('name' in message && message.name !== undefined) rendered.name = message.name;
    if ('tool_calls' in message && message.tool_calls) rendered.tool_calls = message.tool_calls;
    if ('tool_call_id' in message) rendered.tool_call_id = message.tool_call_id;
    return rendered;
  });
  try {
    return encodeChat(tokenizer, templateMessages, { addGenerationPrompt: true }).ids;
  } catch (error) {
    throw invalidRequest(`The model's chat template cannot render these messages: ${(error as Error).message}`, 'messages');
  }
}

function promptList(prompt: CompletionRequest['prompt']): Array<string | number[]> {
  if (typeof prompt === 'string') return [prompt];
  if (prompt.every((item): item is number => typeof item === 'number')) return [prompt as number[]];
  return prompt as Array<string | number[]>;
}

/** What an engine's refusal means to the caller. */
function asServiceError(error: unknown, model: string): unknown {
  if (!(error instanceof GenerationError)) return error;
  switch (error.code) {
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
