import readline from 'node:readline';
import type { Command } from 'commander';
import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { connect } from './client.js';
import { UsageError } from './dataset-commands.js';

interface ChatOptions {
  system?: string;
  temperature?: string;
  maxTokens?: string;
  seed?: string;
  home?: string;
}

const number = (name: string, text: string | undefined, integer: boolean): number | undefined => {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) throw new UsageError(`${name} takes a ${integer ? 'whole ' : ''}number, not "${text}"`);
  return value;
};

/**
 * `tunelab chat MODEL [MESSAGE...]`: one answer, streamed as it is written; without a message, a
 * conversation typed line by line (each answer stays in the conversation), until end of input.
 */
export function chatCommand(program: Command): void {
  program
    .command('chat')
    .argument('<model>', 'a base model, ft: model or checkpoint')
    .argument('[message...]', 'what to ask; without it, a conversation from the terminal')
    .description('chat with a model, answers streamed')
    .option('--system <text>', 'a system message first')
    .option('--temperature <t>', '0 for the most likely answer (default 1)')
    .option('--max-tokens <n>', 'at most this many tokens per answer')
    .option('--seed <n>', 'the same seed gives the same answer')
    .option('--home <dir>', 'home folder holding the api-key file (default $TUNELAB_HOME or ~/.tunelab)')
    .action(async (model: string, words: string[], options: ChatOptions) => {
      const sampling = {
        temperature: number('--temperature', options.temperature, false),
        max_completion_tokens: number('--max-tokens', options.maxTokens, true),
        seed: number('--seed', options.seed, true),
      };
      const client = await connect(options.home);
      const messages: ChatCompletionMessageParam[] = options.system ? [{ role: 'system', content: options.system }] : [];
      const ask = async (text: string) => {
        messages.push({ role: 'user', content: text });
        const stream = await client.chat.completions.create({ model, messages, stream: true, ...sampling });
        let answer = '';
        for await (const chunk of stream) {
          const delta = chunk.choices[0]?.delta.content;
          if (!delta) continue;
          process.stdout.write(delta);
          answer += delta;
        }
        process.stdout.write('\n');
        messages.push({ role: 'assistant', content: answer });
      };
      if (words.length) return ask(words.join(' '));
      const lines = readline.createInterface({ input: process.stdin, output: process.stdout, prompt: '> ', terminal: process.stdin.isTTY });
      if (process.stdin.isTTY) lines.prompt();
      for await (const line of lines) {
        if (line.trim()) await ask(line);
        if (process.stdin.isTTY) lines.prompt();
      }
    });
}
