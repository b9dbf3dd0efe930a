import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { Channel } from '../channel.js';
import { type GenerateMessage, type ServeEvent, type ServeMessage, type TokenLogprob, parseServeEvent } from './protocol.js';
import { engineEnv, enginePython } from './python.js';

/** One generation, in the engine's terms: token ids in, token ids out (engine/README.md, "serve"). */
export interface GenerateRequest {
  inputIds: readonly number[];
  /** A PEFT adapter folder applied on top of the served model, or null. */
  adapter: string | null;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number | null;
  stopIds: readonly number[];
  presencePenalty: number;
  frequencyPenalty: number;
  /** A Lark grammar (llguidance's dialect) the output must match, or null for free text. */
  grammar: string | null;
  /** Alternatives to report per token (0-20) with each token's log-probability, or null for none. */
  logprobs: number | null;
}

export type { TokenLogprob };

export type FinishReason = 'stop' | 'length' | 'cancelled';

export type GenerationUpdate =
  | { type: 'tokens'; ids: number[]; logprobs?: TokenLogprob[] }
  | { type: 'done'; finishReason: FinishReason };

export interface ServeInfo {
  vocabSize: number;
  contextLength: number;
}

/** A request the engine refused or could not finish; `code` is the engine's (`invalid_adapter`, `engine_stopped`, ...). */
export class GenerationError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'GenerationError';
  }
}

export interface ServeProcessOptions {
  /** The model folder the engine loads (a base model, or a full fine-tune). */
  modelDir: string;
  /** The engine's stderr, appended. */
  logPath: string;
  maxBatch: number;
  maxAdapters: number;
}

/**
 * `python3 -m tunelab_engine serve --model DIR`: one process per served model folder, many
 * generations at once, each a stream of updates. Requests go in as JSON lines on stdin and the
 * engine batches them; a stream that its consumer abandons (a client hung up) is cancelled.
 */
export class ServeProcess {
  /** Resolves once the model is loaded; rejects when the engine dies first. */
  readonly ready: Promise<ServeInfo>;
  readonly exited: Promise<void>;
  private readonly streams = new Map<string, Channel<GenerationUpdate>>();
  /** Requests the engine has been sent and not yet finished (a cancelled one stays until the engine says so). */
  private readonly running = new Set<string>();
  /** The engine's last log line: it names the cause when the process dies. */
  private lastLog: string | null = null;
  private nextId = 0;
  private gone: GenerationError | null = null;

  private constructor(
    private readonly child: ChildProcess,
    options: ServeProcessOptions,
  ) {
    const log = fs.createWriteStream(options.logPath, { flags: 'a' });
    log.on('error', (error) => this.remember(`(the engine log could not be written: ${error.message})`));
    readline.createInterface({ input: child.stderr!, crlfDelay: Infinity }).on('line', (line) => {
      log.write(`${line}\n`);
      this.remember(line);
    });
    // A write after the engine died must not become an unhandled 'error' on the server.
    child.stdin!.on('error', () => {});

    let markReady!: (info: ServeInfo) => void;
    let failReady!: (error: Error) => void;
    this.ready = new Promise<ServeInfo>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    // Nobody may be waiting when a process dies idle; its failure is seen through `exited`.
    this.ready.catch(() => {});

    readline.createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      const event: ServeEvent | null = parseServeEvent(line);
      if (!event) {
        this.remember(line);
        return;
      }
      if (event.type === 'ready') {
        markReady({ vocabSize: event.vocab_size, contextLength: event.context_length });
        return;
      }
      if ((event.type === 'done' || event.type === 'error') && event.id !== undefined) this.running.delete(event.id);
      const stream = event.id !== undefined ? this.streams.get(event.id) : undefined;
      if (event.type === 'error' && !stream) {
        this.remember(`${event.code}: ${event.message}`);
        return;
      }
      if (!stream) return;
      if (event.type === 'tokens') stream.push({ type: 'tokens', ids: event.ids, logprobs: event.logprobs });
      else if (event.type === 'done') {
        stream.push({ type: 'done', finishReason: event.finish_reason });
        this.streams.delete(event.id);
      } else if (event.type === 'error') {
        stream.fail(new GenerationError(event.code, event.message));
        this.streams.delete(event.id!);
      }
    });

    this.exited = new Promise<string>((resolve) => {
      child.once('error', (error) => resolve(`could not start: ${error.message}`));
      child.once('close', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit status ${code}`));
    }).then((how) => {
      log.end();
      const last = this.lastLog;
      this.gone = new GenerationError('engine_stopped', `its model server stopped (${how}${last ? `; last log line: ${last}` : ''}).`);
      failReady(this.gone);
      for (const stream of this.streams.values()) stream.fail(this.gone);
      this.streams.clear();
      this.running.clear();
    });
  }

  static start(options: ServeProcessOptions): ServeProcess {
    const args = ['-m', 'tunelab_engine', 'serve', '--model', options.modelDir];
    args.push('--max-batch', String(options.maxBatch), '--max-adapters', String(options.maxAdapters));
    const child = spawn(enginePython(), args, { env: engineEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    return new ServeProcess(child, options);
  }

  /** Generations the engine is working on, or has been asked to cancel and not yet confirmed. */
  get active(): number {
    return this.running.size;
  }

  get alive(): boolean {
    return this.gone === null;
  }

  /**
   * The request's updates: token ids as they are sampled, then `done`. Leaving the loop early, or
   * `signal` aborting, cancels the generation in the engine, which frees its place in the batch.
   */
  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationUpdate> {
    if (this.gone) throw this.gone;
    if (signal?.aborted) throw new GenerationError('cancelled', 'The request was cancelled.');
    const id = `g${this.nextId++}`;
    const stream = new Channel<GenerationUpdate>();
    this.streams.set(id, stream);
    const cancel = () => {
      if (this.streams.delete(id)) this.send({ type: 'cancel', id });
      stream.fail(new GenerationError('cancelled', 'The request was cancelled.'));
    };
    signal?.addEventListener('abort', cancel, { once: true });
    this.running.add(id);
    const message: GenerateMessage = {
      type: 'generate',
      id,
      input_ids: request.inputIds,
      adapter: request.adapter,
      max_tokens: request.maxTokens,
      temperature: request.temperature,
      top_p: request.topP,
      seed: request.seed,
      stop_ids: request.stopIds,
      presence_penalty: request.presencePenalty,
      frequency_penalty: request.frequencyPenalty,
      grammar: request.grammar,
      logprobs: request.logprobs,
    };
    this.send(message);
    try {
      for await (const update of stream.drain()) {
        yield update;
        if (update.type === 'done') return;
      }
    } finally {
      signal?.removeEventListener('abort', cancel);
      // Still listed: the consumer stopped before `done` (a stop string matched, the client left).
      if (this.streams.delete(id)) this.send({ type: 'cancel', id });
    }
  }

  /** Closing stdin asks the engine to exit; one that does not within `graceMs` is killed. */
  async stop(graceMs = 5000): Promise<void> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  private send(message: ServeMessage): void {
    if (this.gone || !this.child.stdin!.writable) return;
    this.child.stdin!.write(`${JSON.stringify(message)}\n`);
  }

  private remember(line: string): void {
    this.lastLog = line;
  }
}
