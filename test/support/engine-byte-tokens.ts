/**
 * A byte-level tokenizer for engine tests: UTF-8 bytes are ids 0..255, and four special ids mark
 * roles and the end of a turn. Any text encodes, so a tiny model can learn a Chinese dataset
 * without a vocabulary file.
 */
export const ROLE_IDS = { system: 256, user: 257, assistant: 258 } as const;
export const END_OF_TURN = 259;
export const BYTE_VOCAB_SIZE = 260;

export type Role = keyof typeof ROLE_IDS;
export interface ChatMessage {
  role: Role;
  content: string;
}

/** A conversation as ids plus the loss mask: assistant content and its end-of-turn are trained. */
export function encodeChat(messages: ChatMessage[]): { ids: number[]; mask: number[] } {
  const ids: number[] = [];
  const mask: number[] = [];
  for (const message of messages) {
    const trained = message.role === 'assistant' ? 1 : 0;
    const bytes = [...Buffer.from(message.content, 'utf8')];
    ids.push(ROLE_IDS[message.role], ...bytes, END_OF_TURN);
    mask.push(0, ...bytes.map(() => trained), trained);
  }
  return { ids, mask };
}

/** The prompt that asks for the next assistant turn. */
export function encodePrompt(messages: ChatMessage[]): number[] {
  return [...encodeChat(messages).ids, ROLE_IDS.assistant];
}

export function decodeBytes(ids: number[]): string {
  return Buffer.from(ids.filter((id) => id < 256)).toString('utf8');
}
