import { get_encoding, type Tiktoken } from 'tiktoken';
import type { WeightedMessage } from './chat-encoding.js';

/** Token counts of one example: everything the model reads, and the assistant's part it learns. */
export interface ExampleTokens {
  total: number;
  trained: number;
}

let encoding: Tiktoken | null = null;

/**
 * One encoder for the process: building it parses cl100k_base's 100k ranks (0.6 s), which a server
 * validating many jobs should pay once. It lives as long as the process, as its tables must.
 */
function cl100k(): Tiktoken {
  encoding ??= get_encoding('cl100k_base');
  return encoding;
}

/** Strings this long or longer are cached: system prompts repeat in every example of most files. */
const CACHE_MIN_LENGTH = 64;
const CACHE_MAX_ENTRIES = 4096;

/**
 * What OpenAI would have counted: `cl100k_base` with the fine-tuning guide's rule (3 tokens per
 * message, 1 per name, 3 to prime the reply, plus each value's tokens). Special-token text in the
 * data is counted as ordinary text, as OpenAI's tokenizer treats user data.
 */
export class OpenAITokenCounter {
  private readonly encoding = cl100k();
  private readonly cache = new Map<string, number>();
  /** Roles are a handful of short strings counted in every message: kept apart from the cache of long texts. */
  private readonly roles = new Map<string, number>();

  count(text: string): number {
    if (text.length < CACHE_MIN_LENGTH) return this.encoding.encode_ordinary(text).length;
    const cached = this.cache.get(text);
    if (cached !== undefined) return cached;
    const count = this.encoding.encode_ordinary(text).length;
    if (this.cache.size >= CACHE_MAX_ENTRIES) this.cache.clear();
    this.cache.set(text, count);
    return count;
  }

  private countRole(role: string): number {
    let count = this.roles.get(role);
    if (count === undefined) this.roles.set(role, (count = this.count(role)));
    return count;
  }

  chat(messages: readonly WeightedMessage[], tools?: unknown[]): ExampleTokens {
    let total = 3;
    let trained = 0;
    for (const message of messages) {
      total += 3 + this.countRole(message.role);
      const content = this.count(message.content ?? '');
      total += content;
      if (message.name !== undefined) total += 1 + this.count(message.name);
      if (message.tool_calls) total += this.count(JSON.stringify(message.tool_calls));
      if (message.tool_call_id !== undefined) total += this.count(message.tool_call_id);
      if (message.role === 'assistant' && message.weight !== 0) {
        trained += content + (message.tool_calls ? this.count(JSON.stringify(message.tool_calls)) : 0);
      }
    }
    if (tools) total += this.count(JSON.stringify(tools));
    return { total, trained };
  }

  promptCompletion(prompt: string, completion: string): ExampleTokens {
    const trained = this.count(completion);
    return { total: this.count(prompt) + trained, trained };
  }
}
