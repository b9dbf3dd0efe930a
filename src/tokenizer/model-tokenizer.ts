import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import './jinja-strip-chars.js';
import { type ToolCallFormat, toolCallFormat } from './tool-calls.js';

/** A message as chat templates see it (OpenAI's chat format, without our `weight`). */
export interface TemplateMessage {
  role: string;
  content: string | null;
  name?: string;
  tool_calls?: unknown[];
  tool_call_id?: string;
}

type SpecialToken = string | { content?: string } | null | undefined;

interface TokenizerConfig {
  chat_template?: string | Array<{ name: string; template: string }>;
  bos_token?: SpecialToken;
  eos_token?: SpecialToken;
  model_max_length?: number;
  [key: string]: unknown;
}

const tokenText = (token: SpecialToken): string | null =>
  typeof token === 'string' ? token : typeof token?.content === 'string' ? token.content : null;

/**
 * A model's own tokenizer and chat template, read from its Hugging Face folder: `tokenizer.json`,
 * `tokenizer_config.json` (with `chat_template`, or a `chat_template.jinja` beside it) and, when
 * present, `generation_config.json` for the ids that end a turn.
 */
export class ModelTokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** Token strings that end an assistant turn (`<|im_end|>`, `<|eot_id|>`, `</s>`): trained, so the model learns to stop. */
  readonly endOfTurnTokens: readonly string[];
  /** Their ids, for the engine's stop condition. */
  readonly endOfTurnIds: readonly number[];
  /** Every special token's text: a template's turn may end in one the configs do not name. */
  readonly specialTokens: readonly string[];

  /** The chat template's source, as the model folder gives it; null when it has none. */
  readonly chatTemplate: string | null;

  private readonly template: Template | null;

  private constructor(
    private readonly tokenizer: Tokenizer,
    /** The same tokenizer for text that does not start the input: see `encodeContinuation`. */
    private readonly continuation: Tokenizer,
    config: TokenizerConfig,
    private readonly templateSource: string | null,
    generationEosIds: number[],
    /** Tokens are written in GPT-2's byte alphabet (a `ByteLevel` decoder). */
    private readonly byteLevel: boolean,
  ) {
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.chatTemplate = templateSource;
    this.template = templateSource ? new Template(templateSource) : null;
    const ends = new Set<string>();
    if (this.eosToken) ends.add(this.eosToken);
    for (const id of generationEosIds) {
      const token = tokenizer.id_to_token(id);
      if (token) ends.add(token);
    }
    this.endOfTurnTokens = [...ends];
    this.specialTokens = [...tokenizer.get_added_tokens_decoder().values()].filter((token) => token.special).map((token) => token.content);
    this.endOfTurnIds = this.endOfTurnTokens.map((token) => tokenizer.token_to_id(token)).filter((id): id is number => id !== undefined);
  }

  static load(folder: string): ModelTokenizer {
    const read = (file: string) => JSON.parse(fs.readFileSync(path.join(folder, file), 'utf8')) as unknown;
    const optional = (file: string) => (fs.existsSync(path.join(folder, file)) ? read(file) : undefined);
    const tokenizerJson = read('tokenizer.json');
    const config = (optional('tokenizer_config.json') ?? {}) as TokenizerConfig;
    const generation = (optional('generation_config.json') ?? {}) as { eos_token_id?: number | number[] };
    const eosIds = generation.eos_token_id === undefined ? [] : [generation.eos_token_id].flat();
    const jinjaFile = path.join(folder, 'chat_template.jinja');
    let template: string | null = fs.existsSync(jinjaFile) ? fs.readFileSync(jinjaFile, 'utf8') : null;
    if (!template && typeof config.chat_template === 'string') template = config.chat_template;
    if (!template && Array.isArray(config.chat_template)) {
      template = config.chat_template.find((entry) => entry.name === 'default')?.template ?? null;
    }
    const tokenizer = new Tokenizer(tokenizerJson as object, config);
    const continuation = withoutPrependedSpace(tokenizerJson);
    // Byte-level tokenizers need no second instance: building one costs as much as the first.
    const byteLevel = JSON.stringify((tokenizerJson as { decoder?: unknown }).decoder ?? null).includes('"ByteLevel"');
    return new ModelTokenizer(tokenizer, continuation ? new Tokenizer(continuation, config) : tokenizer, config, template, eosIds, byteLevel);
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** How the chat template writes tool calls, or null when it renders no tools. */
  get toolCallFormat(): ToolCallFormat | null {
    return toolCallFormat(this.templateSource);
  }

  /** Ids of `text` as it stands: special tokens written in the text are recognized, none are added. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * Ids of text that continues an input already begun. SentencePiece-style tokenizers (Mistral,
   * Llama 2: Metaspace with prepend_scheme "first") mark the start of the input with "▁"; a
   * segment cut out of the middle of a conversation is not its start and must not get one.
   */
  encodeContinuation(text: string): number[] {
    return this.continuation.encode(text, { add_special_tokens: false }).ids;
  }

  /** Ids with what the tokenizer adds around a sequence (a BOS for Llama-style base models). */
  encodeWithSpecialTokens(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: true }).ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /**
   * The bytes a token stands for, which may be part of a character: byte-level BPE tokens map
   * back through GPT-2's byte alphabet; other tokens are their decoded text's UTF-8.
   */
  tokenBytes(id: number): number[] {
    const token = this.tokenizer.id_to_token(id);
    if (this.byteLevel && token !== undefined && [...token].every((char) => BYTE_OF_CHAR.has(char))) {
      return [...token].map((char) => BYTE_OF_CHAR.get(char)!);
    }
    return [...Buffer.from(this.decode([id]), 'utf8')];
  }

  /**
   * The conversation as the model sees it. Thinking is switched off (`enable_thinking: false`), so
   * Qwen3's template renders a turn the same way whether it is trained or asked for.
   */
  renderChat(messages: readonly TemplateMessage[], options: { tools?: unknown[]; addGenerationPrompt: boolean }): string {
    if (!this.template) throw new Error('This model has no chat template: train it with prompt/completion examples.');
    return this.template.render({
      messages,
      tools: options.tools,
      add_generation_prompt: options.addGenerationPrompt,
      enable_thinking: false,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }
}

/**
 * tokenizer.json with the start-of-input "▁" switched off, or null when the tokenizer prepends
 * nothing at the start (byte-level BPE: Qwen, Llama 3). Two ways of writing it: a Metaspace
 * pre-tokenizer (`prepend_scheme: "never"`), and the older `Prepend` normalizer of Llama 2 and
 * Mistral's first tokenizers (dropped from the normalizer sequence).
 */
function withoutPrependedSpace(json: unknown): object | null {
  let changed = false;
  const visit = (node: unknown): unknown => {
    if (Array.isArray(node)) {
      const kept = node.filter((item) => !isPrependedSpace(item));
      if (kept.length !== node.length) changed = true;
      return kept.map(visit);
    }
    if (typeof node !== 'object' || node === null) return node;
    const copy: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) copy[key] = key === 'model' || key === 'added_tokens' ? value : visit(value);
    if (copy.type === 'Metaspace' && copy.prepend_scheme !== 'never') {
      copy.prepend_scheme = 'never';
      copy.add_prefix_space = false;
      changed = true;
    }
    if (isPrependedSpace(copy.normalizer)) {
      copy.normalizer = null;
      changed = true;
    }
    return copy;
  };
  const result = visit(json) as object;
  return changed ? result : null;
}

const isPrependedSpace = (node: unknown) =>
  typeof node === 'object' && node !== null && (node as { type?: unknown }).type === 'Prepend' && (node as { prepend?: unknown }).prepend === '▁';

/** GPT-2's printable stand-in for each byte (bytes_to_unicode), inverted. */
const BYTE_OF_CHAR: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>();
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    map.set(String.fromCodePoint(printable ? byte : 256 + shifted++), byte);
  }
  return map;
})();
