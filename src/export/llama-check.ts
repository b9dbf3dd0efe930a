import { Template } from '@huggingface/jinja';
import type { Token } from 'node-llama-cpp';
import { ServiceError } from '../errors.js';
import { llamaRuntime } from '../inference/llama-runtime.js';
import { encodeChat } from '../tokenizer/chat-encoding.js';
import type { ModelTokenizer, TemplateMessage } from '../tokenizer/model-tokenizer.js';

/**
 * tunelab's own greedy answer (token ids) to a prompt, as its serving generates it: up to
 * `maxTokens`, or sooner once `enough` says the answer so far settles the check. Several are asked
 * at once (the engine batches them); `signal` cancels one.
 */
export type ServedGreedy = (
  promptIds: number[],
  options: { maxTokens: number; enough: (ids: readonly number[]) => boolean; signal: AbortSignal },
) => Promise<number[]>;

export interface PromptCheck {
  /** The prompt's last message, to tell the prompts apart. */
  prompt: string;
  prompt_tokens: number;
  tunelab: string;
  llama_cpp: string;
  /**
   * tunelab's answer tokens (for `first_sentence`, up to where its first sentence is settled), and
   * how many of them llama.cpp produced the same before the first difference.
   */
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
  /** Equal tokens over tunelab's compared tokens, all prompts together. */
  equal_token_share: number;
}

const MAX_TOKENS = 64;
const THREADS = 1;

const SENTENCE_END = /[!?。！？\n]|\.(?=\s|$)/;

/** Up to and including the first sentence end (or line end); the whole text when it has none. */
export function firstSentence(text: string): string {
  const end = SENTENCE_END.exec(text);
  return end ? text.slice(0, end.index + 1) : text;
}

/**
 * Whether the first sentence of a text still being generated is complete: more text cannot
 * change it (a final "." may yet be "3.5"). From there on, whether another text begins with this
 * text's first sentence is decided by what has been generated, so the check stops both sides there.
 */
export function firstSentenceSettled(text: string): boolean {
  const end = SENTENCE_END.exec(text);
  return end !== null && (end[0] !== '.' || end.index + 1 < text.length);
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

/** tunelab's side of the check: its prompt ids and greedy answers, asked before the GGUF exists. */
export interface TunelabAnswers {
  prompts: TemplateMessage[][];
  required: ExportChecks['required'];
  /** tunelab's prompt ids, one per prompt. */
  ids: number[][];
  /** Its answers, without end-of-turn tokens; for `first_sentence` up to where the first sentence is settled. */
  answers: Promise<number[]>[];
  /** Stops the answers still being generated (the export failed or is done). */
  cancel(): void;
}

/**
 * Asks tunelab's own serving for its greedy answers to every prompt at once (the engine batches
 * them), so that they are generated while the GGUF is being made.
 */
export function askTunelab(options: {
  tokenizer: ModelTokenizer;
  prompts: TemplateMessage[][];
  required: ExportChecks['required'];
  served: ServedGreedy;
}): TunelabAnswers {
  const { tokenizer, required } = options;
  const ends = new Set(tokenizer.endOfTurnIds);
  const stop = new AbortController();
  const ids = options.prompts.map((messages) => encodeChat(tokenizer, messages, { addGenerationPrompt: true }).ids);
  const answers = ids.map((prompt) =>
    options
      .served(prompt, {
        maxTokens: MAX_TOKENS,
        enough: (answer) => required === 'first_sentence' && firstSentenceSettled(tokenizer.decode(answer, { skipSpecialTokens: true })),
        signal: stop.signal,
      })
      .then((answer) => withoutEnds(answer, ends)),
  );
  // A failed export leaves them unawaited: their cancellation is expected, not unhandled.
  for (const answer of answers) answer.catch(() => {});
  return { prompts: options.prompts, required, ids, answers, cancel: () => stop.abort() };
}

/**
 * Loads a GGUF (and a LoRA adapter over it) with llama.cpp and answers each prompt greedily, to
 * compare with tunelab's answers. The prompt is rendered by the chat template embedded in the
 * GGUF and tokenized by llama.cpp, and must give exactly tunelab's prompt ids; the answers must be
 * the same tokens (`tokens`) or begin with the same sentence (`first_sentence`: llama.cpp stops
 * where its first sentence is settled, which decides the comparison as the whole answer would). A
 * failure names the prompt, the first differing token and both texts.
 */
export async function checkGguf(options: {
  ggufFile: string;
  /** A GGUF LoRA adapter llama.cpp applies over `ggufFile`, or null. */
  adapterFile?: string | null;
  tokenizer: ModelTokenizer;
  tunelab: TunelabAnswers;
  onProgress?: (done: number) => void;
}): Promise<ExportChecks> {
  const { tokenizer, tunelab } = options;
  const { required } = tunelab;
  const ends = new Set(tokenizer.endOfTurnIds);
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
    const checks: PromptCheck[] = [];
    for (const [index, messages] of tunelab.prompts.entries()) {
      const label = messages.at(-1)?.content ?? '';
      const rendered = template.render({
        messages,
        add_generation_prompt: true,
        enable_thinking: false,
        bos_token: model.tokens.bosString ?? '',
        eos_token: model.tokens.eosString ?? '',
      });
      const theirs = model.tokenize(rendered, true).map(Number);
      const prompt = tunelab.ids[index]!;
      const at = firstDifference(prompt, theirs);
      if (at < Math.max(prompt.length, theirs.length)) {
        throw mismatch(
          `The prompt for ${JSON.stringify(label)} rendered by the GGUF's chat template and tokenized by llama.cpp differs from tunelab's at token ${at}: ` +
            `tunelab ${describe(tokenizer, prompt[at])}, llama.cpp ${describe(tokenizer, theirs[at])}.`,
        );
      }
      await sequence.clearHistory();
      const generated: number[] = [];
      for await (const token of sequence.evaluate(theirs as Token[], { temperature: 0 })) {
        if (model.isEogToken(token) || ends.has(token)) break;
        generated.push(token);
        if (generated.length >= MAX_TOKENS) break;
        if (required === 'first_sentence' && firstSentenceSettled(model.detokenize(generated as Token[]))) break;
      }
      const answer = await tunelab.answers[index]!;
      const tunelabText = tokenizer.decode(answer, { skipSpecialTokens: true });
      const llamaText = model.detokenize(generated as Token[]);
      const equal = firstDifference(answer, generated);
      const check: PromptCheck = {
        prompt: label,
        prompt_tokens: prompt.length,
        tunelab: tunelabText,
        llama_cpp: llamaText,
        tokens: answer.length,
        equal_tokens: equal,
        first_sentence_equal: llamaText.startsWith(firstSentence(tunelabText)),
      };
      const failed = required === 'tokens' ? equal < Math.max(answer.length, generated.length) : !check.first_sentence_equal;
      if (failed) {
        throw mismatch(
          `llama.cpp's greedy answer to ${JSON.stringify(label)} differs from tunelab's at token ${equal}: ` +
            `tunelab ${describe(tokenizer, answer[equal])}, llama.cpp ${describe(tokenizer, generated[equal])}. ` +
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
      required,
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
