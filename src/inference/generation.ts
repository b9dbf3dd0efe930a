import { setMaxListeners } from 'node:events';
import { Channel } from '../channel.js';
import { GenerationError, type TokenLogprob } from '../engine/serve-process.js';
import type { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { TextStream } from '../tokenizer/text-stream.js';
import type { TokenGenerator, TokenRequest } from './backend.js';

export type FinishReason = 'stop' | 'length';

/** Text for one choice; the last event of a choice carries its finish reason. */
export interface ChoiceEvent {
  index: number;
  text: string;
  finishReason: FinishReason | null;
  /** The log-probabilities of the tokens that arrived with this event, when the request asked for them. */
  logprobs: TokenLogprob[];
}

export interface ChoiceRequest {
  index: number;
  tokens: TokenRequest;
}

/**
 * The choices of one completion request generated side by side by a backend, as one stream
 * of text events. Token ids become text per choice (`TextStream`: whole characters, stop strings
 * across tokens); a stop string ends its choice and cancels its generation. Leaving the stream
 * early cancels every choice still running.
 */
export class Generation {
  completionTokens = 0;

  constructor(
    private readonly generator: TokenGenerator,
    private readonly tokenizer: ModelTokenizer,
    private readonly choices: readonly ChoiceRequest[],
    private readonly stops: readonly string[],
    private readonly signal: AbortSignal | undefined,
  ) {}

  async *events(): AsyncGenerator<ChoiceEvent> {
    const cancel = new AbortController();
    // Each choice listens on it: n may be far above the default warning threshold of 10.
    setMaxListeners(this.choices.length + 1, cancel.signal);
    const cancelAll = () => cancel.abort();
    if (this.signal?.aborted) cancel.abort();
    this.signal?.addEventListener('abort', cancelAll, { once: true });
    const channel = new Channel<ChoiceEvent>();
    let running = this.choices.length;
    for (const choice of this.choices) {
      this.run(choice, cancel.signal, (event) => channel.push(event)).then(
        () => {
          if (--running === 0) channel.end();
        },
        (error: unknown) => channel.fail(error),
      );
    }
    try {
      yield* channel.drain();
    } finally {
      this.signal?.removeEventListener('abort', cancelAll);
      cancel.abort();
    }
  }

  private async run(choice: ChoiceRequest, signal: AbortSignal, emit: (event: ChoiceEvent) => void): Promise<void> {
    const text = new TextStream(this.tokenizer, this.stops);
    for await (const update of this.generator.generate(choice.tokens, signal)) {
      if (update.type === 'tokens') {
        this.completionTokens += update.ids.length;
        const delta = text.push(update.ids);
        const logprobs = update.logprobs ?? [];
        if (delta.stopped) {
          emit({ index: choice.index, text: delta.text, finishReason: 'stop', logprobs });
          return;
        }
        if (delta.text || logprobs.length) emit({ index: choice.index, text: delta.text, finishReason: null, logprobs });
      } else {
        if (update.finishReason === 'cancelled') throw new GenerationError('cancelled', 'The request was cancelled.');
        // The end-of-turn token is never sent as text, but it was generated: it counts, as OpenAI counts it.
        if (update.finishReason === 'stop') this.completionTokens += 1;
        emit({ index: choice.index, text: text.finish(), finishReason: update.finishReason, logprobs: [] });
        return;
      }
    }
  }
}
