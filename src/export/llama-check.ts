import { Template } from '@huggingface/jinja';
import type { Token } from 'node-llama-cpp';
import { ServiceError } from '../errors.js';
import { llamaRuntime } from '../inference/llama-runtime.js';
import { encodeChat } from '../tokenizer/chat-encoding.js';
import type { ModelTokenizer, TemplateMessage } from '../tokenizer/model-tokenizer.js';

/** tunelab's own greedy answer (token ids) to a prompt, as its serving generates it. */
export type ServedGreedy = (promptIds: number[], maxTokens: number) => Promise<number[]>;

export interface PromptCheck {
  /** The prompt's last message, to tell the prompts apart. */
  prompt: string;
  prompt_tokens: number;
  tunelab: string;
  llama_cpp: string;
  /** tunelab's answer tokens, and how many of them llama.cpp produced the same before the first difference. */
  tokens: number;
  equal_tokens: number;
  first_sentence_equal: boolean;
}

export interface ExportChecks {
  /** What loaded the GGUF. */
  runtime: string;
  /** f16, bf16: every token must equal; quantized: the first sentence. */
  required: 'tokens' | 'first_sentence';
  prompts: PromptCheck[];
  /** Equal tokens over tunelab's tokens, all prompts together. */
  equal_token_share: number;
}

const MAX_TOKENS = 64;
const THREADS = 1;

/** Up to and including the first sentence end (or line end); the whole text when it has none. */
export function firstSentence(text: string): string {
  const end = /[!?。！？\n]|\.(?=\s|$)/.exec(text);
  return end ? text.slice(0, end.index + 1) : text;
}

function firstDifference(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

const withoutEnds = (ids: number[], ends: ReadonlySet<number>) => {
  while (ids.length && ends.has(ids.at(-1)!)) ids.pop();
  return ids;
};

/**
 * Loads a GGUF (and a LoRA adapter over it) with llama.cpp and answers each prompt greedily, beside tunelab's own serving of
 * the same fine-tune. The prompt is rendered by the chat template embedded in the GGUF and
 * tokenized by llama.cpp, and must give exactly tunelab's prompt ids; the answers must be the
 * same tokens (`tokens`) or begin with the same sentence (`first_sentence`). A failure names the
 * prompt, the first differing token and both texts.
 */
export async function checkGguf(options: {
  ggufFile: string;
  /** A GGUF LoRA adapter llama.cpp applies over `ggufFile`, or null. */
  adapterFile?: string | null;
  tokenizer: ModelTokenizer;
  prompts: TemplateMessage[][];
  required: ExportChecks['required'];
  served: ServedGreedy;
  onProgress?: (done: number) => void;
}): Promise<ExportChecks> {
  const { tokenizer } = options;
  const runtime = await llamaRuntime();
  const model = await runtime.loadModel({ modelPath: options.ggufFile });
  try {
    const context = await model.createContext({
      contextSize: 2048,
      threads: THREADS,
      sequences: 1,
      ...(options.adapterFile ? { lora: { adapters: [{ filePath: options.adapterFile }] } } : {}),
    });
    const sequence = context.getSequence();
    const embedded = model.fileInfo.metadata.tokenizer.chat_template;
    if (typeof embedded !== 'string') throw mismatch('The GGUF carries no chat template (tokenizer.chat_template).');
    const template = new Template(embedded);
    const ends = new Set(tokenizer.endOfTurnIds);
    const checks: PromptCheck[] = [];
    for (const messages of options.prompts) {
      const label = messages.at(-1)?.content ?? '';
      const ours = encodeChat(tokenizer, messages, { addGenerationPrompt: true }).ids;
      const rendered = template.render({
        messages,
        add_generation_prompt: true,
        enable_thinking: false,
        bos_token: model.tokens.bosString ?? '',
        eos_token: model.tokens.eosString ?? '',
      });
      const theirs = model.tokenize(rendered, true).map(Number);
      const at = firstDifference(ours, theirs);
      if (at < Math.max(ours.length, theirs.length)) {
        throw mismatch(
          `The prompt for ${JSON.stringify(label)} rendered by the GGUF's chat template and tokenized by llama.cpp differs from tunelab's at token ${at}: ` +
            `tunelab ${describe(tokenizer, ours[at])}, llama.cpp ${describe(tokenizer, theirs[at])}.`,
        );
      }
      const served = withoutEnds(await options.served(ours, MAX_TOKENS), ends);
      await sequence.clearHistory();
      const generated: number[] = [];
      for await (const token of sequence.evaluate(theirs as Token[], { temperature: 0 })) {
        if (model.isEogToken(token) || ends.has(token)) break;
        generated.push(token);
        if (generated.length >= MAX_TOKENS) break;
      }
      const tunelabText = tokenizer.decode(served, { skipSpecialTokens: true });
      const llamaText = model.detokenize(generated as Token[]);
      const equal = firstDifference(served, generated);
      const check: PromptCheck = {
        prompt: label,
        prompt_tokens: ours.length,
        tunelab: tunelabText,
        llama_cpp: llamaText,
        tokens: served.length,
        equal_tokens: equal,
        first_sentence_equal: llamaText.startsWith(firstSentence(tunelabText)),
      };
      const failed = options.required === 'tokens' ? equal < Math.max(served.length, generated.length) : !check.first_sentence_equal;
      if (failed) {
        throw mismatch(
          `llama.cpp's greedy answer to ${JSON.stringify(label)} differs from tunelab's at token ${equal}: ` +
            `tunelab ${describe(tokenizer, served[equal])}, llama.cpp ${describe(tokenizer, generated[equal])}. ` +
            `tunelab: ${JSON.stringify(tunelabText)}; llama.cpp: ${JSON.stringify(llamaText)}.`,
        );
      }
      checks.push(check);
      options.onProgress?.(checks.length);
    }
    const total = checks.reduce((sum, c) => sum + c.tokens, 0);
    const equal = checks.reduce((sum, c) => sum + Math.min(c.equal_tokens, c.tokens), 0);
    await context.dispose();
    return {
      runtime: `llama.cpp through node-llama-cpp, ${THREADS} thread`,
      required: options.required,
      prompts: checks,
      equal_token_share: total ? equal / total : 1,
    };
  } finally {
    await model.dispose();
  }
}

const describe = (tokenizer: ModelTokenizer, id: number | undefined) =>
  id === undefined ? '(the end)' : `${JSON.stringify(tokenizer.decode([id]))} (id ${id})`;

const mismatch = (message: string) => new ServiceError('server', message, { code: 'export_check_failed' });
