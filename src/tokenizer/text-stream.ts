import type { ModelTokenizer } from './model-tokenizer.js';

export interface TextDelta {
  /** Text that is final: it will not change whatever tokens come next. */
  text: string;
  /** A stop string was found; `text` ends just before it and nothing more is to be sent. */
  stopped: boolean;
}

/**
 * Turns token ids, as they are generated, into text that can be sent at once.
 *
 * Characters: a token may end inside a UTF-8 character (a Chinese character is often two or three
 * byte tokens), so text is only released once it decodes without a trailing replacement
 * character. Each step decodes a short window of ids (the previous token and the new ones) and
 * keeps what the new ones add; decoding the window rather than the new ids alone keeps the spaces
 * that SentencePiece decoders drop at the start of a text.
 *
 * Stop strings: they may span tokens, so text that could be the start of one is held back until
 * the next tokens show whether it is.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;
  private held = '';
  private stopped = false;

  constructor(
    private readonly tokenizer: ModelTokenizer,
    private readonly stops: readonly string[] = [],
  ) {}

  push(ids: readonly number[]): TextDelta {
    if (this.stopped) return { text: '', stopped: true };
    this.ids.push(...ids);
    const before = this.decode(this.prefixOffset, this.readOffset);
    const after = this.decode(this.prefixOffset, this.ids.length);
    if (after.length <= before.length || after.endsWith('\uFFFD')) return { text: '', stopped: false };
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return this.release(after.slice(before.length));
  }

  /** What is left once generation has ended: held-back text, and bytes that never completed a character. */
  finish(): string {
    if (this.stopped) return '';
    const rest = this.decode(this.prefixOffset, this.ids.length).slice(this.decode(this.prefixOffset, this.readOffset).length);
    this.readOffset = this.ids.length;
    const { text } = this.release(rest);
    const tail = this.stopped ? '' : this.held;
    this.held = '';
    return text + tail;
  }

  private release(fresh: string): TextDelta {
    const text = this.held + fresh;
    let cut = -1;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return { text: text.slice(0, cut), stopped: true };
    }
    const keep = this.stopPrefixLength(text);
    this.held = text.slice(text.length - keep);
    return { text: text.slice(0, text.length - keep), stopped: false };
  }

  /** The longest end of `text` that some stop string starts with. */
  private stopPrefixLength(text: string): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, text.length); n > longest; n--) {
        if (text.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }

  private decode(from: number, to: number): string {
    return from >= to ? '' : this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: true });
  }
}
