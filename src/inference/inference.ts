import type { ChatCompletion, ChatCompletionChunk } from 'openai/resources/chat/completions';
import type { Completion, CompletionUsage } from 'openai/resources/completions';
import { GenerationError, type GenerateRequest } from '../engine/serve-process.js';
import type { ServeLease, ServePool } from '../engine/serve-pool.js';
import { ServiceError, invalidRequest } from '../errors.js';
import { newId, unixSeconds } from '../ids.js';
import { modelContextLength } from '../models/base-models.js';
import type { ModelService, ServableModel } from '../models/models.js';
import { type WeightedMessage, encodeChat } from '../tokenizer/chat-encoding.js';
import { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import type { UsageService } from '../usage/usage.js';
import { type ChoiceEvent, type ChoiceRequest, type FinishReason, Generation } from './generation.js';
import type { ChatCompletionRequest, ChatMessage, CompletionRequest } from './requests.js';

/** What a completion request has in common, chat or legacy: sampling, choices, streaming. */
interface SamplingRequest {
  model: string;
  temperature?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
}

const SYSTEM_FINGERPRINT = 'fp_tunelab';
const TOKENIZERS_KEPT = 16;

/**
 * Chat and legacy completions for base models, fine-tunes and checkpoints: the model's own
 * tokenizer and chat template (the same encoding training used) turn messages into token ids, a
 * model server (`ServePool`) generates, and the ids come back as text. Every request's tokens are
 * recorded as the organization's usage.
 */
export class InferenceService {
  private readonly tokenizers = new Map<string, ModelTokenizer>();

  constructor(
    private readonly models: ModelService,
    private readonly pool: ServePool,
    private readonly usage: UsageService,
    private readonly onError: (message: string, error: unknown) => void = () => {},
  ) {}

  /** A `chat.completion`, or with `stream`, its chunks. Problems with the request are thrown before any chunk. */
  async chat(
    orgId: string,
    request: ChatCompletionRequest,
    signal?: AbortSignal,
  ): Promise<ChatCompletion | AsyncGenerator<ChatCompletionChunk>> {
    const model = await this.models.servable(orgId, request.model);
    const tokenizer = this.tokenizer(model);
    if (!tokenizer.hasChatTemplate) {
      throw invalidRequest(
        `The model \`${request.model}\` has no chat template; use /v1/completions with a prompt instead.`,
        'model',
      );
    }
    const prompt = renderChat(tokenizer, request.messages);
    const maxTokens = request.max_completion_tokens ?? request.max_tokens ?? null;
    const run = await this.start(orgId, model, tokenizer, [prompt], maxTokens, request, 'messages', signal);
    const id = newId('chatcmpl-');
    const created = unixSeconds();
    const head = { id, created, model: request.model, system_fingerprint: SYSTEM_FINGERPRINT };
    if (!request.stream) {
      const { texts, finishReasons } = await run.collect();
      await this.record(orgId, request.model, id, run.usage());
      return {
        ...head,
        object: 'chat.completion',
        choices: texts.map((content, index) => ({
          index,
          message: { role: 'assistant', content, refusal: null },
          logprobs: null,
          finish_reason: finishReasons[index]!,
        })),
        usage: run.usage(),
      };
    }
    const includeUsage = request.stream_options?.include_usage === true;
    const chunk = (choices: ChatCompletionChunk['choices'], usage?: CompletionUsage): ChatCompletionChunk => ({
      ...head,
      object: 'chat.completion.chunk',
      choices,
      ...(includeUsage ? { usage: usage ?? null } : {}),
    });
    const self = this;
    return (async function* () {
      try {
        for (let index = 0; index < run.choiceCount; index++) {
          yield chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
        }
        for await (const event of run.events()) {
          if (event.text) yield chunk([{ index: event.index, delta: { content: event.text }, logprobs: null, finish_reason: null }]);
          if (event.finishReason) yield chunk([{ index: event.index, delta: {}, logprobs: null, finish_reason: event.finishReason }]);
        }
        if (includeUsage) yield chunk([], run.usage());
      } finally {
        await self.record(orgId, request.model, id, run.usage());
      }
    })();
  }

  /** A `text_completion` (legacy: a prompt in, text out), or with `stream`, its chunks. */
  async complete(orgId: string, request: CompletionRequest, signal?: AbortSignal): Promise<Completion | AsyncGenerator<Completion>> {
    const model = await this.models.servable(orgId, request.model);
    const tokenizer = this.tokenizer(model);
    // As prompt/completion examples were trained: the prompt with what the tokenizer adds at the start.
    const prompts = promptList(request.prompt).map((prompt) =>
      typeof prompt === 'string' ? tokenizer.encodeWithSpecialTokens(prompt) : prompt,
    );
    const run = await this.start(orgId, model, tokenizer, prompts, request.max_tokens, request, 'prompt', signal);
    const id = newId('cmpl-');
    const created = unixSeconds();
    const head = { id, created, model: request.model, system_fingerprint: SYSTEM_FINGERPRINT, object: 'text_completion' as const };
    const echoes = prompts.map((ids) => (request.echo ? tokenizer.decode(ids, { skipSpecialTokens: true }) : ''));
    const echo = (index: number) => echoes[Math.floor(index / run.n)]!;
    if (!request.stream) {
      const { texts, finishReasons } = await run.collect();
      await this.record(orgId, request.model, id, run.usage());
      return {
        ...head,
        choices: texts.map((text, index) => ({ index, text: echo(index) + text, logprobs: null, finish_reason: finishReasons[index]! })),
        usage: run.usage(),
      };
    }
    const includeUsage = request.stream_options?.include_usage === true;
    const chunk = (choices: Completion['choices'], usage?: CompletionUsage): Completion => ({
      ...head,
      choices,
      ...(includeUsage ? { usage: usage ?? null! } : {}),
    });
    const self = this;
    return (async function* () {
      try {
        if (request.echo) {
          for (let index = 0; index < run.choiceCount; index++) {
            yield chunk([{ index, text: echo(index), logprobs: null, finish_reason: null! }]);
          }
        }
        for await (const event of run.events()) {
          yield chunk([{ index: event.index, text: event.text, logprobs: null, finish_reason: event.finishReason! }]);
        }
        if (includeUsage) yield chunk([], run.usage());
      } finally {
        await self.record(orgId, request.model, id, run.usage());
      }
    })();
  }

  /** The model servers running, and how many generations each is working on. */
  status(): Array<{ modelDir: string; generations: number }> {
    return this.pool.status();
  }

  /**
   * Checks the prompts against the model's context, waits for its model server (loading it if
   * need be) and starts every choice: `n` per prompt.
   */
  private async start(
    orgId: string,
    model: ServableModel,
    tokenizer: ModelTokenizer,
    prompts: number[][],
    maxTokens: number | null,
    request: SamplingRequest,
    promptParam: string,
    signal: AbortSignal | undefined,
  ): Promise<Run> {
    const context = modelContextLength(model.weights);
    for (const ids of prompts) {
      if (context !== null) checkContext(ids.length, maxTokens, context, promptParam);
    }
    let lease: ServeLease;
    try {
      lease = await this.pool.acquire(model.weights, signal);
    } catch (error) {
      throw asServiceError(error, request.model);
    }
    const vocab = lease.info.vocabSize;
    const n = request.n ?? 1;
    const choices: ChoiceRequest[] = [];
    prompts.forEach((ids, p) => {
      if (ids.some((id) => id >= vocab)) {
        lease.release();
        throw invalidRequest(`Token ids in '${promptParam}' must be below the model's vocabulary size, ${vocab}.`, promptParam);
      }
      const limit = Math.max(1, lease.info.contextLength - ids.length);
      for (let i = 0; i < n; i++) {
        const engine: GenerateRequest = {
          inputIds: ids,
          adapter: model.adapter,
          maxTokens: Math.min(maxTokens ?? limit, limit),
          temperature: request.temperature ?? 1,
          topP: request.top_p ?? 1,
          // Each choice its own stream of randomness, the same for the same seed.
          seed: request.seed === null || request.seed === undefined ? null : request.seed + p * n + i,
          stopIds: tokenizer.endOfTurnIds,
          presencePenalty: request.presence_penalty ?? 0,
          frequencyPenalty: request.frequency_penalty ?? 0,
        };
        choices.push({ index: p * n + i, engine });
      }
    });
    const stops = request.stop === null || request.stop === undefined ? [] : [request.stop].flat();
    const generation = new Generation(lease.process, tokenizer, choices, stops, signal);
    const promptTokens = prompts.reduce((sum, ids) => sum + ids.length, 0);
    return new Run(generation, lease, n, choices.length, promptTokens, request.model);
  }

  private async record(orgId: string, model: string, id: string, usage: CompletionUsage): Promise<void> {
    await this.usage
      .recordInference({ orgId, model, inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens, sourceId: id })
      .catch((error: unknown) => this.onError(`recording the usage of ${id} failed`, error));
  }

  private tokenizer(model: ServableModel): ModelTokenizer {
    let tokenizer = this.tokenizers.get(model.weights);
    if (!tokenizer) {
      tokenizer = ModelTokenizer.load(model.weights);
      if (this.tokenizers.size >= TOKENIZERS_KEPT) this.tokenizers.delete(this.tokenizers.keys().next().value!);
    } else this.tokenizers.delete(model.weights);
    // Re-inserted: a Map keeps insertion order, so the first key is the least recently used.
    this.tokenizers.set(model.weights, tokenizer);
    return tokenizer;
  }
}

/** One request's choices under way; its model server is released when they have all ended. */
class Run {
  constructor(
    private readonly generation: Generation,
    private readonly lease: ServeLease,
    readonly n: number,
    readonly choiceCount: number,
    private readonly promptTokens: number,
    private readonly model: string,
  ) {}

  async *events(): AsyncGenerator<ChoiceEvent> {
    try {
      yield* this.generation.events();
    } catch (error) {
      throw asServiceError(error, this.model);
    } finally {
      this.lease.release();
    }
  }

  async collect(): Promise<{ texts: string[]; finishReasons: FinishReason[] }> {
    const texts = Array.from({ length: this.choiceCount }, () => '');
    const finishReasons: FinishReason[] = Array.from({ length: this.choiceCount }, () => 'length');
    for await (const event of this.events()) {
      texts[event.index] += event.text;
      if (event.finishReason) finishReasons[event.index] = event.finishReason;
    }
    return { texts, finishReasons };
  }

  usage(): CompletionUsage {
    const completion = this.generation.completionTokens;
    return { prompt_tokens: this.promptTokens, completion_tokens: completion, total_tokens: this.promptTokens + completion };
  }
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
    const text = typeof message.content === 'string' || message.content == null ? (message.content ?? null) : message.content.map((part) => part.text).join('');
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
    case 'invalid_request':
      return invalidRequest(error.message);
    default:
      return new ServiceError('server', `The model \`${model}\` could not generate: ${error.message}`, { code: error.code });
  }
}
