import type { TemplateMessage } from '../tokenizer/model-tokenizer.js';

export interface TrainingPrompts {
  /** Conversations up to each example's last assistant turn: what the fine-tune was trained to answer. */
  conversations: TemplateMessage[][];
  /** The system message every example began with, when all began with the same one. */
  system: string | null;
}

interface ChatLine {
  messages?: Array<{ role?: unknown; content?: unknown }>;
}

/**
 * The first `limit` distinct prompts of a chat-format training file (JSON lines of
 * `{"messages": [...]}`, already validated when the job ran), and its constant system message.
 */
export async function trainingPrompts(bytes: AsyncIterable<Buffer>, limit: number): Promise<TrainingPrompts> {
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
  return { conversations, system: systems.size === 1 && only !== undefined ? only : null };
}
