import { encodeChat, type EncodedSequence } from '../tokenizer/chat-encoding.js';
import type { Example } from './examples.js';

type PreferenceExample = Extract<Example, { format: 'preference' }>;

/** A preference pair as the trainer gets it (two examples, in this order) and as it is billed. */
export interface EncodedPair {
  /** The shared conversation with the preferred answer; only the answer (and its end of turn) trained. */
  chosen: EncodedSequence;
  /** The same conversation with the non-preferred answer. */
  rejected: EncodedSequence;
  /** Leading tokens both share (the prompt): counted once for cost, as OpenAI bills a pair. */
  shared: number;
}

/**
 * Renders both sides of a pair through the model's chat template, as supervised examples are
 * (`encodeChat`), so the prompt tokens are the same on both sides and equal to what chat sends.
 * Assistant turns inside the shared conversation are context: DPO scores only the answers.
 */
export function encodePreference(tokenizer: Parameters<typeof encodeChat>[0], example: PreferenceExample): EncodedPair {
  const context = example.messages.map((message) => (message.role === 'assistant' ? { ...message, weight: 0 } : message));
  const chosen = encodeChat(tokenizer, [...context, { ...example.preferred, weight: 1 }], { tools: example.tools });
  const rejected = encodeChat(tokenizer, [...context, { ...example.nonPreferred, weight: 1 }], { tools: example.tools });
  let shared = 0;
  while (shared < chosen.ids.length && shared < rejected.ids.length && chosen.ids[shared] === rejected.ids[shared]) shared++;
  return { chosen, rejected, shared };
}
