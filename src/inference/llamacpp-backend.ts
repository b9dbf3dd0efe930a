import type { LlamaContext, LlamaContextSequence, LlamaModel, SequenceEvaluateOptions, Token } from 'node-llama-cpp';
import { GenerationError, type GenerationUpdate, type TokenLogprob } from '../engine/serve-process.js';
import type { BackendLease, TokenGenerator, TokenRequest } from './backend.js';
import { llamaGrammar } from './llama-grammars.js';
import { llamaRuntime } from './llama-runtime.js';

export interface LlamaCppOptions {
  /** Generations one model answers at once (llama.cpp sequences of one context); more wait their turn. */
  maxBatch: number;
  /** A model with no request for this long is unloaded. */
  idleMs: number;
  /** Threads per model; null: as many as the host has math cores. */
  threads: number | null;
  /** Models loaded at once: loading another first unloads the least recently used idle one. */
  maxModels: number;
}

/** Tokens each sequence can hold (prompt and answer): the model's own context, up to this. */
const MAX_CONTEXT = 4096;

/**
 * llama.cpp (node-llama-cpp) in the server process, one context per GGUF file with `maxBatch`
 * sequences that llama.cpp decodes in one batch. It generates from the same prompt ids the engine
 * gets (tunelab's chat template and tokenizer, which the export check proved equal to the GGUF's).
 */
export class LlamaCppBackend {
  private readonly loaded = new Map<string, LoadedModel>();
  private closed = false;

  constructor(private readonly options: LlamaCppOptions) {}

  async acquire(gguf: string, signal?: AbortSignal): Promise<BackendLease> {
    if (this.closed) throw new GenerationError('engine_stopped', 'the server is shutting down.');
    if (signal?.aborted) throw new GenerationError('cancelled', 'The request was cancelled.');
    let entry = this.loaded.get(gguf);
    if (!entry) {
      if (this.loaded.size >= this.options.maxModels) {
        const idle = [...this.loaded.values()].filter((e) => e.leases === 0).sort((a, b) => a.lastUsed - b.lastUsed)[0];
        if (idle) void this.unload(idle);
      }
      entry = new LoadedModel(gguf, this.options);
      this.loaded.set(gguf, entry);
      entry.ready.catch(() => this.loaded.get(gguf) === entry && this.loaded.delete(gguf));
    }
    const model = entry;
    model.hold();
    try {
      const info = await model.ready;
      return { generator: model, info, release: () => model.release(() => void this.unload(model)) };
    } catch (error) {
      model.release(() => void this.unload(model));
      throw error instanceof GenerationError ? error : new GenerationError('engine_stopped', `llama.cpp could not load ${gguf}: ${(error as Error).message}`);
    }
  }

  status(): Array<{ modelDir: string; generations: number }> {
    return [...this.loaded.values()].map((entry) => ({ modelDir: entry.gguf, generations: entry.active }));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.loaded.values()].map((entry) => this.unload(entry)));
  }

  private async unload(entry: LoadedModel): Promise<void> {
    if (this.loaded.get(entry.gguf) === entry) this.loaded.delete(entry.gguf);
    await entry.dispose();
  }
}

/** One GGUF loaded, its sequences lent to one generation each. */
class LoadedModel implements TokenGenerator {
  readonly ready: Promise<{ vocabSize: number; contextLength: number }>;
  leases = 0;
  active = 0;
  lastUsed = performance.now();
  private model: LlamaModel | null = null;
  private context: LlamaContext | null = null;
  private readonly free: LlamaContextSequence[] = [];
  private readonly waiting: Array<(sequence: LlamaContextSequence) => void> = [];
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly gguf: string,
    private readonly options: LlamaCppOptions,
  ) {
    this.ready = this.load();
    this.ready.catch(() => {});
  }

  hold(): void {
    this.leases++;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Gives a lease back; the last one starts the idle countdown. */
  release(unload: () => void): void {
    this.leases--;
    this.lastUsed = performance.now();
    if (this.leases > 0) return;
    this.idleTimer = setTimeout(unload, this.options.idleMs);
    this.idleTimer.unref();
  }

  async dispose(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    await this.ready.catch(() => {});
    await this.context?.dispose();
    await this.model?.dispose();
  }

  async *generate(request: TokenRequest, signal?: AbortSignal): AsyncGenerator<GenerationUpdate> {
    const model = this.model!;
    if (request.inputIds.length >= this.context!.contextSize) {
      throw new GenerationError('invalid_request', `The prompt's ${request.inputIds.length} tokens leave no room in llama.cpp's context of ${this.context!.contextSize}.`);
    }
    const llama = await llamaRuntime();
    const grammar = request.constraint ? await llamaGrammar(llama, request.constraint) : null;
    const { LlamaGrammarEvaluationState } = await import('node-llama-cpp');
    const sequence = await this.sequence(signal);
    this.active++;
    try {
      const generated: Token[] = [];
      const stops = new Set(request.stopIds);
      const options: SequenceEvaluateOptions = {
        temperature: request.temperature,
        topP: request.topP,
        yieldEogToken: true,
        ...(request.seed === null ? {} : { seed: request.seed }),
        ...(grammar ? { grammarEvaluationState: new LlamaGrammarEvaluationState({ model, grammar }) } : {}),
        ...(request.presencePenalty || request.frequencyPenalty
          ? { repeatPenalty: { punishTokens: () => generated, penalty: 1, presencePenalty: request.presencePenalty, frequencyPenalty: request.frequencyPenalty } }
          : {}),
      };
      const top = request.logprobs;
      const steps = sequence.evaluateWithMetadata(request.inputIds as Token[], { probabilities: top !== null }, options);
      for await (const step of steps) {
        if (signal?.aborted) throw new GenerationError('cancelled', 'The request was cancelled.');
        const token = step.token;
        if (stops.has(token) || model.isEogToken(token)) {
          yield { type: 'done', finishReason: 'stop' };
          return;
        }
        generated.push(token);
        const probabilities = (step as { probabilities?: Map<Token, number> }).probabilities;
        yield { type: 'tokens', ids: [token], ...(probabilities ? { logprobs: [tokenLogprob(token, probabilities, top!)] } : {}) };
        if (generated.length >= request.maxTokens) {
          yield { type: 'done', finishReason: 'length' };
          return;
        }
      }
      yield { type: 'done', finishReason: 'length' };
    } finally {
      this.active--;
      await sequence.clearHistory();
      const next = this.waiting.shift();
      if (next) next(sequence);
      else this.free.push(sequence);
    }
  }

  private async load(): Promise<{ vocabSize: number; contextLength: number }> {
    const llama = await llamaRuntime();
    this.model = await llama.loadModel({ modelPath: this.gguf });
    const contextSize = Math.min(this.model.trainContextSize, MAX_CONTEXT);
    this.context = await this.model.createContext({
      contextSize,
      sequences: this.options.maxBatch,
      ...(this.options.threads === null ? {} : { threads: this.options.threads }),
    });
    for (let i = 0; i < this.options.maxBatch; i++) this.free.push(this.context.getSequence());
    const tokens = this.model.fileInfo.metadata.tokenizer.ggml.tokens;
    return { vocabSize: tokens.length, contextLength: this.context.contextSize };
  }

  /** A free sequence, or the next one given back. */
  private sequence(signal: AbortSignal | undefined): Promise<LlamaContextSequence> {
    const free = this.free.pop();
    if (free) return Promise.resolve(free);
    return new Promise((resolve, reject) => {
      const take = (sequence: LlamaContextSequence) => {
        signal?.removeEventListener('abort', abort);
        resolve(sequence);
      };
      const abort = () => {
        this.waiting.splice(this.waiting.indexOf(take), 1);
        reject(new GenerationError('cancelled', 'The request was cancelled.'));
      };
      signal?.addEventListener('abort', abort, { once: true });
      this.waiting.push(take);
    });
  }
}

/** llama.cpp's probabilities (after temperature and top_p, as it samples) as log-probabilities. */
function tokenLogprob(token: Token, probabilities: Map<Token, number>, top: number): TokenLogprob {
  const alternatives = [...probabilities].slice(0, top).map(([id, p]): [number, number] => [id, Math.log(p)]);
  return { token, logprob: Math.log(probabilities.get(token) ?? 0), top: alternatives };
}
