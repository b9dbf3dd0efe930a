import type { ModelTokenizer, TemplateMessage } from './model-tokenizer.js';
import { templateToolCalls } from './tool-calls.js';

/** A chat message with our training field: assistant messages with `weight: 0` are context, not trained. */
export interface WeightedMessage extends TemplateMessage {
  weight?: number;
}

/** A run of text tokenized on its own, trained or not. */
export interface Segment {
  text: string;
  ids: number[];
  trained: boolean;
}

/**
 * Token ids and, for each, whether the model learns to produce it. This is what the trainer
 * trains, what the doctor counts and what chat sends as a prompt: one function for all three,
 * so the tokens of a prompt are exactly the training prefix of the same conversation.
 */
export interface EncodedSequence {
  ids: number[];
  /** 1 where the token is trained (assistant content and its end-of-turn token), else 0. */
  mask: number[];
  segments: Segment[];
}

/** Marks an assistant message's content in a second rendering of the template. Control characters: never in real content at the same place. */
const sentinel = (index: number) => `\u0001${index}\u0002`;

/**
 * Renders a conversation through the model's chat template and tokenizes it in segments cut at
 * each assistant turn: the turn's content through its end-of-turn token is one segment, the text
 * between turns (role headers, user and system messages, the generation prompt) another. Cutting
 * depends only on the conversation, never on weights, so a prompt rendered for chat is tokenized
 * exactly as the same prefix was at training time.
 */
export function encodeChat(
  tokenizer: ModelTokenizer,
  messages: readonly WeightedMessage[],
  options: { tools?: unknown[]; addGenerationPrompt?: boolean } = {},
): EncodedSequence {
  const addGenerationPrompt = options.addGenerationPrompt ?? false;
  // Templates test and concatenate content: an assistant turn that only calls tools renders with "".
  const templateMessages = messages.map(({ weight: _weight, ...message }) => ({
    ...message,
    content: message.content ?? '',
    ...(message.tool_calls ? { tool_calls: templateToolCalls(message.tool_calls) } : {}),
  }));
  const render = (list: TemplateMessage[]) => tokenizer.renderChat(list, { tools: options.tools, addGenerationPrompt });
  const text = render(templateMessages);

  const assistantIndexes = messages.flatMap((message, index) => (message.role === 'assistant' ? [index] : []));
  const prompt = (list: TemplateMessage[]) => tokenizer.renderChat(list, { tools: options.tools, addGenerationPrompt: true });
  const turns = locateTurns(text, templateMessages, assistantIndexes, render, prompt);

  const segments: Segment[] = [];
  const push = (start: number, end: number, trained: boolean) => {
    if (end <= start) return;
    const piece = text.slice(start, end);
    segments.push({ text: piece, ids: start === 0 ? tokenizer.encode(piece) : tokenizer.encodeContinuation(piece), trained });
  };
  let cursor = 0;
  for (let t = 0; t < turns.length; t++) {
    const turn = turns[t]!;
    const limit = turns[t + 1]?.start ?? text.length;
    const trained = messages[turn.messageIndex]!.weight !== 0;
    // The turn ends at the end-of-turn token the configs name; failing that, at the first special
    // token the template writes after the content (an old Llama 3 config names <|end_of_text|>
    // while its template ends turns with <|eot_id|>).
    const end =
      findTurnEnd(text, turn.contentEnd, limit, tokenizer.endOfTurnTokens) ??
      findTurnEnd(text, turn.contentEnd, limit, tokenizer.specialTokens);
    push(cursor, turn.start, false);
    push(turn.start, end ?? turn.contentEnd, trained);
    // A template that writes no end-of-turn token still has to teach the model to stop.
    const stopId = tokenizer.endOfTurnIds[0];
    if (end === null && stopId !== undefined) {
      segments.push({ text: tokenizer.idToToken(stopId) ?? '', ids: [stopId], trained });
    }
    cursor = end ?? turn.contentEnd;
  }
  push(cursor, text.length, false);
  return flatten(segments);
}

/**
 * Prompt/completion examples for base models: the prompt with what the tokenizer adds at the
 * start of a sequence (a BOS for Llama-style models), the completion and the end-of-sequence
 * token trained.
 */
export function encodePromptCompletion(tokenizer: ModelTokenizer, prompt: string, completion: string | null): EncodedSequence {
  const segments: Segment[] = [{ text: prompt, ids: tokenizer.encodeWithSpecialTokens(prompt), trained: false }];
  if (completion !== null) {
    // The completion continues the prompt: no start-of-input "▁" of its own (SentencePiece tokenizers).
    segments.push({ text: completion, ids: tokenizer.encodeContinuation(completion), trained: true });
    const stopId = tokenizer.endOfTurnIds[0];
    if (stopId !== undefined) segments.push({ text: tokenizer.idToToken(stopId) ?? '', ids: [stopId], trained: true });
  }
  return flatten(segments);
}

function flatten(segments: Segment[]): EncodedSequence {
  const ids: number[] = [];
  const mask: number[] = [];
  for (const segment of segments) {
    for (const id of segment.ids) {
      ids.push(id);
      mask.push(segment.trained ? 1 : 0);
    }
  }
  return { ids, mask, segments };
}

interface Turn {
  messageIndex: number;
  /** Where the assistant's content starts in the rendered text. */
  start: number;
  /** Where it ends (before tool calls and the end-of-turn token). */
  contentEnd: number;
}

/**
 * Finds each assistant message's content in the rendered conversation. Templates may trim
 * content, drop reasoning or render the last turn differently, so positions come from the
 * template itself: render once more with sentinels in place of the contents and, when putting
 * the contents back gives the same text, read the positions off; otherwise compare one
 * sentinel rendering per turn with the real one (longest common prefix and suffix). A turn whose
 * content the template does not write (Llama 3.1 writes a tool call in its place) starts where the
 * generation prompt of the conversation before it ends.
 */
function locateTurns(
  text: string,
  messages: readonly TemplateMessage[],
  assistantIndexes: readonly number[],
  render: (list: TemplateMessage[]) => string,
  prompt: (list: TemplateMessage[]) => string,
): Turn[] {
  if (assistantIndexes.length === 0) return [];
  const withSentinels = messages.map((message, index) =>
    message.role === 'assistant' ? { ...message, content: sentinel(index) } : message,
  );
  const marked = render(withSentinels);
  const turns: Turn[] = [];
  let rebuilt = '';
  let from = 0;
  for (const index of assistantIndexes) {
    const at = marked.indexOf(sentinel(index), from);
    if (at < 0) break;
    rebuilt += marked.slice(from, at);
    const content = messages[index]!.content ?? '';
    turns.push({ messageIndex: index, start: rebuilt.length, contentEnd: rebuilt.length + content.length });
    rebuilt += content;
    from = at + sentinel(index).length;
  }
  rebuilt += marked.slice(from);
  if (turns.length === assistantIndexes.length && rebuilt === text) return turns;

  return assistantIndexes.map((index) => {
    const one = render(messages.map((message, i) => (i === index ? { ...message, content: sentinel(index) } : message)));
    if (one === text) {
      const before = prompt(messages.slice(0, index));
      const start = text.startsWith(before) ? before.length : commonPrefixLength(text, before);
      return { messageIndex: index, start, contentEnd: start };
    }
    const start = commonPrefixLength(text, one);
    const contentEnd = Math.max(start, text.length - commonSuffixLength(text, one, start));
    return { messageIndex: index, start, contentEnd };
  });
}

/** The end of the first end-of-turn token in text[from, limit), or null when the template wrote none there. */
function findTurnEnd(text: string, from: number, limit: number, endTokens: readonly string[]): number | null {
  let best: number | null = null;
  for (const token of endTokens) {
    if (!token) continue;
    const at = text.indexOf(token, from);
    if (at >= 0 && at + token.length <= limit && (best === null || at + token.length < best)) best = at + token.length;
  }
  return best;
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Common suffix of a and b that does not reach back before `floor` in a. */
function commonSuffixLength(a: string, b: string, floor: number): number {
  const n = Math.min(a.length - floor, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(a.length - 1 - i) === b.charCodeAt(b.length - 1 - i)) i++;
  return i;
}
