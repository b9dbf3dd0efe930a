import type { TemplateMessage } from '../tokenizer/model-tokenizer.js';

/** The conversations a GGUF export is checked on. */
export interface CheckPrompts {
  /** Conversations up to each example's last assistant turn: what the fine-tune was trained to answer. */
  conversations: TemplateMessage[][];
  /** The system message every example began with, when all began with the same one. */
  system: string | null;
  /** False for a base model's export, which has no training file: GENERAL_PROMPTS. */
  fromTrainingFile: boolean;
}

/** What a base model's GGUF is checked on: everyday questions, a system message, a second turn. */
export const GENERAL_PROMPTS: CheckPrompts = {
  conversations: [
    [{ role: 'user', content: 'What is the capital of France?' }],
    [{ role: 'user', content: 'Write a haiku about the sea.' }],
    [{ role: 'user', content: 'Explain in two sentences what a compiler does.' }],
    [
      { role: 'system', content: 'You are a helpful assistant who answers briefly.' },
      { role: 'user', content: 'How many days are there in a leap year?' },
    ],
    [{ role: 'user', content: 'Translate "good morning" into Spanish.' }],
    [
      { role: 'user', content: 'Name a primary colour.' },
      { role: 'assistant', content: 'Red.' },
      { role: 'user', content: 'And another one?' },
    ],
  ],
  system: null,
  fromTrainingFile: false,
};

interface ChatLine {
  messages?: Array<{ role?: unknown; content?: unknown }>;
}

/**
 * The first `limit` distinct prompts of a chat-format training file (JSON lines of
 * `{"messages": [...]}`, already validated when the job ran), and its constant system message.
 */
export async function trainingPrompts(bytes: AsyncIterable<Buffer>, limit: number): Promise<CheckPrompts> {
  let text = '';
  for await (const chunk of bytes) text += chunk.toString('utf8');
  const conversations: TemplateMessage[][] = [];
  const seen = new Set<string>();
  const systems = new Set<string | null>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const messages = ((JSON.parse(line) as ChatLine).messages ?? [])
      .filter((m): m is { role: string; content: string } => typeof m.role === 'string' && typeof m.content === 'string')
      .map(({ role, content }) => ({ role, content }));
    systems.add(messages[0]?.role === 'system' ? messages[0].content : null);
    const lastAnswer = messages.map((m) => m.role).lastIndexOf('assistant');
    if (lastAnswer < 1) continue;
    const prompt = messages.slice(0, lastAnswer);
    const key = JSON.stringify(prompt);
    if (seen.has(key) || conversations.length >= limit) continue;
    seen.add(key);
    conversations.push(prompt);
  }
  const [only] = systems;
  return { conversations, system: systems.size === 1 && only !== undefined ? only : null, fromTrainingFile: true };
}
