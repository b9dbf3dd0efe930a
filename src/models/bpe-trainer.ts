import { Tokenizer } from '@huggingface/tokenizers';

/**
 * A byte-level BPE trainer (GPT-2's scheme, as Qwen and Llama 3 use it) that writes a Hugging Face
 * `tokenizer.json`. It is our own because nothing on npm trains one offline and in-process:
 * `@huggingface/tokenizers` (what loads tokenizers here) only encodes and decodes, and the
 * `tokenizers` package with Hugging Face's Rust trainer is an unmaintained native build. Merges are
 * learned on the words the saved tokenizer's own pre-tokenizer produces (`@huggingface/tokenizers`
 * loading the same JSON, with the bytes as its only tokens), so training and encoding split text alike.
 *
 * Deterministic: the most frequent pair is merged first, ties going to the pair whose two token
 * strings come first in code-unit order; nothing depends on iteration order or timing.
 */

export interface CorpusText {
  text: string;
  /** Each occurrence counts this many times (a list of characters that must become tokens, say). */
  weight: number;
}

export interface BpeTrainingOptions {
  corpus: readonly CorpusText[];
  /** The pre-tokenizer's JSON (a `Sequence` ending in `ByteLevel` with `use_regex: false`). */
  preTokenizer: PreTokenizerJson;
  /** Tokens before the special ones: 256 bytes plus the merges. */
  vocabSize: number;
  /** Pairs seen fewer times (weighted) are never merged. */
  minFrequency: number;
  /** Appended after the learned tokens, in this order. */
  specialTokens: readonly string[];
}

export interface PreTokenizerJson {
  type: 'Sequence';
  pretokenizers: object[];
}

export interface TokenizerJson {
  version: string;
  added_tokens: Array<{ id: number; content: string; special: boolean; [key: string]: unknown }>;
  model: { type: 'BPE'; vocab: Record<string, number>; merges: Array<[string, string]>; [key: string]: unknown };
  [key: string]: unknown;
}

/** GPT-2's table: each byte as a printable character (printable ASCII and Latin-1 stay themselves). */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

interface Word {
  symbols: number[];
  count: number;
}

/** Learns merges from the corpus and returns the tokenizer.json object. */
export function trainByteLevelBpe(options: BpeTrainingOptions): TokenizerJson {
  const tokens: string[] = bytesToUnicode();
  const idOf = new Map(tokens.map((token, id) => [token, id]));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const bytesOnly = {
    normalizer: null,
    pre_tokenizer: options.preTokenizer,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: { type: 'BPE', vocab: Object.fromEntries(idOf), merges: [] },
    added_tokens: [],
  };
  const preTokenizer = new Tokenizer(bytesOnly, {}).pre_tokenizer;
  if (!preTokenizer) throw new Error('the tokenizer has no pre-tokenizer');

  // Distinct pre-tokenized words with their weighted counts.
  const counts = new Map<string, number>();
  for (const { text, weight } of options.corpus) {
    for (const word of preTokenizer.pre_tokenize(text)) counts.set(word, (counts.get(word) ?? 0) + weight);
  }
  const words: Word[] = [...counts.keys()].sort().map((word) => ({
    symbols: [...word].map((char) => {
      const id = idOf.get(char);
      if (id === undefined) throw new Error(`pre-tokenizer produced ${JSON.stringify(char)}, not a byte-level character`);
      return id;
    }),
    count: counts.get(word)!,
  }));

  // Pair counts, the words holding each pair (may hold stale entries), and a max-heap of
  // (count, pair) entries checked against the current count when popped.
  const key = (a: number, b: number) => a * 65536 + b;
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const heap = new PairHeap(tokens);
  const touched = new Set<number>();
  const addPairs = (w: number, sign: 1 | -1) => {
    const { symbols, count } = words[w]!;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const k = key(symbols[i]!, symbols[i + 1]!);
      pairCounts.set(k, (pairCounts.get(k) ?? 0) + sign * count);
      touched.add(k);
      if (sign > 0) {
        let set = pairWords.get(k);
        if (!set) pairWords.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  const pushTouched = () => {
    for (const k of touched) {
      const count = pairCounts.get(k)!;
      if (count >= options.minFrequency) heap.push(count, Math.floor(k / 65536), k % 65536);
    }
    touched.clear();
  };
  words.forEach((_, w) => addPairs(w, 1));
  pushTouched();

  const merges: Array<[string, string]> = [];
  while (tokens.length < options.vocabSize) {
    const best = heap.popCurrent(pairCounts, key);
    if (!best) break;
    const [a, b] = best;
    const merged = tokens.length;
    tokens.push(tokens[a]! + tokens[b]!);
    merges.push([tokens[a]!, tokens[b]!]);
    const k = key(a, b);
    for (const w of pairWords.get(k) ?? []) {
      const symbols = words[w]!.symbols;
      let holds = false;
      for (let i = 0; i + 1 < symbols.length; i++) if (symbols[i] === a && symbols[i + 1] === b) holds = true;
      if (!holds) continue;
      addPairs(w, -1);
      const next: number[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === a && symbols[i + 1] === b) {
          next.push(merged);
          i++;
        } else {
          next.push(symbols[i]!);
        }
      }
      words[w]!.symbols = next;
      addPairs(w, 1);
    }
    pairWords.delete(k);
    pairCounts.delete(k);
    touched.delete(k);
    pushTouched();
  }

  const vocab: Record<string, number> = {};
  tokens.forEach((token, id) => (vocab[token] = id));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: options.specialTokens.map((content, i) => ({
      id: tokens.length + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    // No normalizer: every string, NFC or not, comes back byte for byte.
    normalizer: null,
    pre_tokenizer: options.preTokenizer,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** A binary max-heap of (count, a, b); ties: the pair of token strings that sorts first. */
class PairHeap {
  private readonly items: Array<[number, number, number]> = [];
  constructor(private readonly tokens: readonly string[]) {}

  push(count: number, a: number, b: number): void {
    const items = this.items;
    items.push([count, a, b]);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  /** The best pair whose entry still matches its current count; stale entries are dropped. */
  popCurrent(counts: Map<number, number>, key: (a: number, b: number) => number): [number, number] | null {
    while (this.items.length > 0) {
      const [count, a, b] = this.pop();
      if (counts.get(key(a, b)) === count) return [a, b];
    }
    return null;
  }

  private pop(): [number, number, number] {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let best = i;
        if (left < items.length && this.before(items[left]!, items[best]!)) best = left;
        if (right < items.length && this.before(items[right]!, items[best]!)) best = right;
        if (best === i) break;
        [items[i], items[best]] = [items[best]!, items[i]!];
        i = best;
      }
    }
    return top;
  }

  private before(x: [number, number, number], y: [number, number, number]): boolean {
    if (x[0] !== y[0]) return x[0] > y[0];
    const [xa, xb, ya, yb] = [this.tokens[x[1]]!, this.tokens[x[2]]!, this.tokens[y[1]]!, this.tokens[y[2]]!];
    if (xa !== ya) return xa < ya;
    return xb < yb;
  }
}
