import { encodeChat, encodePromptCompletion, type EncodedSequence } from '../tokenizer/chat-encoding.js';
import type { ModelTokenizer } from '../tokenizer/model-tokenizer.js';
import { OpenAITokenCounter, type ExampleTokens } from '../tokenizer/openai-counts.js';
import { DuplicateFinder } from './duplicates.js';
import { checkExample, describeJsonError, formatOf, type DatasetFormat, type Example } from './examples.js';
import type { DatasetError, DatasetWarning, ErrorCategory, Location, ScreeningCategory, ScreeningFinding, WarningCategory } from './findings.js';
import { readJsonlLines } from './jsonl.js';
import { blockingMessage, Screener, type ScreeningPolicy } from './screening.js';
import { autoEpochs, Samples, trainingCost, type Distribution, type Prices } from './stats.js';
import { encodePreference } from './preference-encoding.js';
import { TrainingArraysWriter } from './training-arrays.js';

/** OpenAI's minimum for a training file. */
export const MIN_TRAINING_EXAMPLES = 10;
/** The guide's per-example limit, used when neither the caller nor the model says otherwise. */
export const DEFAULT_CONTEXT = 16_385;

/** The context examples are counted and cut at: the model's own, at most the guide's limit. */
export const trainingContext = (modelMaxLength: number | null) => Math.min(modelMaxLength ?? DEFAULT_CONTEXT, DEFAULT_CONTEXT);
export const OPENAI_TOKENIZER = 'cl100k_base';

export interface TokenCounts {
  /** All tokens of all valid examples (before truncation to the context). */
  total: number;
  /** Tokens the model learns to produce. */
  trained: number;
  distributions: { messages: Distribution | null; total_tokens: Distribution | null; assistant_tokens: Distribution | null };
  /** Preference files: the trained tokens of each side, and the prompt tokens both share (billed once). */
  preference?: { chosen_trained: number; rejected_trained: number; shared_prompt: number };
}

export interface ScreeningReport {
  blocked: boolean;
  /** "This file failed moderation safety checks. Flagged lines: 4, 13 ..." when something blocks. */
  message: string | null;
  flagged_lines: number[];
  counts: Partial<Record<ScreeningCategory, number>>;
  findings: ScreeningFinding[];
}

export interface ShownExample {
  line: number;
  segments: Array<{ text: string; trained: boolean }>;
  /** Preference pairs: the non-preferred side (`segments` is the preferred one). */
  rejected_segments?: Array<{ text: string; trained: boolean }>;
}

export interface DatasetReport {
  role: 'training' | 'validation';
  format: DatasetFormat | null;
  n_examples: number;
  /** No errors and nothing blocked by screening. */
  can_train: boolean;
  /** The first few of each category; `error_counts` has them all. */
  errors: DatasetError[];
  error_counts: Partial<Record<ErrorCategory, number>>;
  warnings: DatasetWarning[];
  warning_counts: Partial<Record<WarningCategory, number>>;
  /** Tokens per example the model trains on; longer examples are cut there. */
  context: number;
  /** Keyed by tokenizer: the model's name, and cl100k_base for what OpenAI would have counted. */
  token_counts: Record<string, TokenCounts>;
  /** Which of them billing, cost and `too_long` use: the model's own when there is one. */
  billing_tokenizer: string;
  n_epochs: number;
  /** Sum over examples of min(context, tokens). */
  billing_tokens: number;
  /** Billing tokens times epochs. */
  charged_tokens: number;
  estimated_cost_usd: number;
  prices: Prices;
  screening: ScreeningReport;
  shown_examples: ShownExample[];
  validation?: DatasetReport;
}

export interface ExamineOptions {
  role: 'training' | 'validation';
  /** The base model's tokenizer and chat template; without one, counts are OpenAI's only. */
  model: { name: string; tokenizer: ModelTokenizer } | null;
  /**
   * False: check and screen only, with no tokenizer at all (`model` must be null). The report's
   * `token_counts` is then empty, no `too_long` warning is given, and billing tokens and cost are 0.
   */
  countTokens?: boolean;
  context: number;
  /** The job's epochs when it sets them; otherwise OpenAI's "auto" rule. */
  nEpochs?: number | null;
  prices: Prices;
  screener: Screener;
  /** Keep the first K examples' segments, to show what is trained. */
  show?: number;
  /** Write the training arrays as the examples go by (the job pipeline). */
  arrays?: TrainingArraysWriter | null;
  /** The validation file must be in the training file's format. */
  expectFormat?: DatasetFormat | null;
  /** How many findings of each category the report lists. */
  listLimit?: number;
  onProgress?: (bytesRead: number) => void;
  /** Stops the reading (a job cancelled while its files are checked, a server stopping). */
  signal?: AbortSignal;
}

/** Findings of one kind: every one counted, the first few per category kept. */
class Tally<T extends { category: string }> {
  readonly list: T[] = [];
  readonly counts: Partial<Record<T['category'], number>> = {};
  constructor(private readonly limit: number) {}

  /** All findings added, listed or not. */
  size = 0;

  add(finding: T): void {
    const key = finding.category as T['category'];
    const count = (this.counts[key] ?? 0) + 1;
    this.counts[key] = count;
    this.size++;
    if (count <= this.limit) this.list.push(finding);
  }
}

class TokenTally {
  total = 0;
  trained = 0;
  readonly messages = new Samples();
  readonly totals = new Samples();
  readonly assistant = new Samples();
  /** Preference files only. */
  pairs: { chosen_trained: number; rejected_trained: number; shared_prompt: number } | null = null;

  add(tokens: ExampleTokens, messages: number | null): void {
    this.total += tokens.total;
    this.trained += tokens.trained;
    this.totals.push(tokens.total);
    this.assistant.push(tokens.trained);
    if (messages !== null) this.messages.push(messages);
  }

  summary(): TokenCounts {
    return {
      total: this.total,
      trained: this.trained,
      distributions: { messages: this.messages.summary(), total_tokens: this.totals.summary(), assistant_tokens: this.assistant.summary() },
      ...(this.pairs ? { preference: this.pairs } : {}),
    };
  }
}

/**
 * The dataset doctor: reads a JSONL file as a stream and checks every example, screens its text,
 * counts its tokens with the model's tokenizer and chat template (the same encoding the trainer
 * gets) and with OpenAI's, works out epochs and cost, and optionally writes the training arrays.
 * Memory stays flat whatever the file's size: per example it keeps one slot of the duplicate table.
 */
export async function examineDataset(input: AsyncIterable<Buffer | Uint8Array>, options: ExamineOptions): Promise<DatasetReport> {
  const limit = options.listLimit ?? 20;
  const countTokens = options.countTokens ?? true;
  if (!countTokens && options.model) throw new Error('A model tokenizer was given, but countTokens is false.');
  const errors = new Tally<DatasetError>(limit);
  const warnings = new Tally<DatasetWarning>(limit);
  const findings = new Tally<ScreeningFinding>(limit);
  /** Each blocked line with the first category that blocked it: the job's error names them all. */
  const blockedLines = new Map<number, ScreeningFinding>();
  const modelTally = options.model ? new TokenTally() : null;
  const openaiTally = new TokenTally();
  const counter = countTokens ? new OpenAITokenCounter() : null;
  const duplicates = new DuplicateFinder();
  const shown: ShownExample[] = [];
  const billingName = options.model?.name ?? OPENAI_TOKENIZER;
  let format: DatasetFormat | null = null;
  let nExamples = 0;
  let billingTokens = 0;
  let bytesRead = 0;

  const error = (category: ErrorCategory, message: string, where: Partial<Location> = {}) =>
    errors.add({ line: where.line ?? null, message_index: where.message_index ?? null, field: where.field ?? null, category, message });
  const warn = (category: WarningCategory, message: string, where: Partial<Location>) =>
    warnings.add({ line: where.line ?? null, message_index: where.message_index ?? null, field: where.field ?? null, category, message });
  const found = (finding: ScreeningFinding) => {
    findings.add(finding);
    if (finding.action === 'block' && finding.line !== null && !blockedLines.has(finding.line)) blockedLines.set(finding.line, finding);
  };
  const screen = (text: string | null | undefined, where: Location) => {
    if (!text) return;
    for (const finding of options.screener.scan(text, where)) found(finding);
    options.screener.addForModeration(text, where);
  };

  for await (const batch of readJsonlLines(input)) {
    options.signal?.throwIfAborted();
    for (const entry of batch) {
      nExamples++;
      bytesRead += entry.bytes + 1;
      const line = entry.line;
      if ('invalidUtf8' in entry) {
        error('invalid_utf8', `The line is not valid UTF-8 (the first bad byte is byte ${entry.invalidUtf8.byteOffset + 1}); save the file as UTF-8.`, { line });
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(entry.text);
      } catch (parseError) {
        error('invalid_json', describeJsonError(entry.text, parseError as Error), { line });
        continue;
      }
      if (format === null && typeof value === 'object' && value !== null && !Array.isArray(value)) {
        format = formatOf(value as Record<string, unknown>) ?? 'chat';
        if (options.expectFormat && format !== options.expectFormat) {
          error('mixed_formats', `The validation file is in ${format} format, but the training file is in ${options.expectFormat} format.`, { line });
        }
      }
      const example = checkExample(value, line, format ?? 'chat');
      if ('category' in example) {
        errors.add(example);
        continue;
      }

      const earlier = duplicates.check(entry.raw, line);
      if (earlier !== null) warn('duplicate_example', `The same example as line ${earlier}.`, { line });

      exampleWarnings(example, line, warn);
      screenExample(example, line, screen);
      await options.screener.moderationCaughtUp();
      if (!counter) continue;

      const openai = openaiTokens(counter, example);
      openaiTally.add(openai, example.format === 'prompt_completion' ? null : example.messages.length);
      let billed = openai.total;
      if (options.model) {
        // A preference pair is two sequences (preferred, then non-preferred) sharing their prompt.
        let sequences: EncodedSequence[];
        let shared = 0;
        try {
          if (example.format === 'preference') {
            const pair = encodePreference(options.model.tokenizer, example);
            sequences = [pair.chosen, pair.rejected];
            shared = pair.shared;
          } else sequences = [encodeExample(options.model.tokenizer, example)];
        } catch (templateError) {
          // Templates refuse some conversations (Mistral's: roles that do not alternate).
          error('template_error', `The model's chat template cannot render this example: ${(templateError as Error).message}`, { line });
          continue;
        }
        // What trains is what fits in the context.
        const kept = sequences.map((encoded) => {
          const keep = Math.min(encoded.ids.length, options.context);
          return { ids: encoded.ids.slice(0, keep), mask: encoded.mask.slice(0, keep), cut: keep < encoded.ids.length };
        });
        const trained = kept.map((sequence) => countTrained(sequence.mask));
        const tokens = { total: sequences.reduce((sum, encoded) => sum + encoded.ids.length, 0) - shared, trained: trained.reduce((a, b) => a + b, 0) };
        modelTally!.add(tokens, example.format === 'prompt_completion' ? null : example.messages.length);
        if (example.format === 'preference') {
          const pairs = (modelTally!.pairs ??= { chosen_trained: 0, rejected_trained: 0, shared_prompt: 0 });
          pairs.chosen_trained += trained[0]!;
          pairs.rejected_trained += trained[1]!;
          pairs.shared_prompt += shared;
        }
        billed = tokens.total;
        if (shown.length < (options.show ?? 0)) {
          const [first, second] = sequences.map((encoded) => encoded.segments.map(({ text, trained }) => ({ text, trained })));
          shown.push({ line, segments: first!, ...(second ? { rejected_segments: second } : {}) });
        }
        if (options.arrays && errors.size === 0) for (const sequence of kept) await options.arrays.add(sequence.ids, sequence.mask);
        if (kept.some((sequence, i) => sequence.cut && trained[i] === 0)) {
          warn('no_trained_tokens', `The example's trained tokens all lie beyond the context of ${options.context.toLocaleString('en-US')}, so it teaches nothing.`, { line });
        }
      }
      if (billed > options.context) {
        warn('too_long', `The example has ${billed.toLocaleString('en-US')} tokens; the context is ${options.context.toLocaleString('en-US')}, so the last ${(billed - options.context).toLocaleString('en-US')} will be cut.`, { line });
      }
      billingTokens += Math.min(billed, options.context);
    }
    options.onProgress?.(bytesRead);
  }

  if (nExamples === 0) error('empty_file', 'The file has no examples: it is empty or holds only blank lines.');
  else if (options.role === 'training' && nExamples < MIN_TRAINING_EXAMPLES) {
    error('invalid_n_examples', `Training file has ${nExamples} example(s), but must have at least ${MIN_TRAINING_EXAMPLES} examples`);
  }
  for (const finding of await options.screener.flushModeration()) found(finding);

  const nEpochs = options.nEpochs ?? autoEpochs(nExamples);
  const charged = billingTokens * nEpochs;
  const message = blockingMessage([...blockedLines.values()]);
  const tokenCounts: Record<string, TokenCounts> = {};
  if (options.model && modelTally) tokenCounts[options.model.name] = modelTally.summary();
  if (countTokens) tokenCounts[OPENAI_TOKENIZER] = openaiTally.summary();
  return {
    role: options.role,
    format,
    n_examples: nExamples,
    can_train: errors.size === 0 && blockedLines.size === 0,
    errors: errors.list,
    error_counts: errors.counts,
    warnings: warnings.list,
    warning_counts: warnings.counts,
    context: options.context,
    token_counts: tokenCounts,
    billing_tokenizer: billingName,
    n_epochs: nEpochs,
    billing_tokens: billingTokens,
    charged_tokens: charged,
    estimated_cost_usd: trainingCost(charged, options.prices),
    prices: options.prices,
    screening: {
      blocked: blockedLines.size > 0,
      message: blockedLines.size > 0 ? message : null,
      flagged_lines: [...blockedLines.keys()].sort((a, b) => a - b),
      counts: findings.counts,
      findings: findings.list,
    },
    shown_examples: shown,
  };
}

export interface FilesToExamine {
  /** Each opens the file's bytes afresh (a local file or a stored blob). */
  training: () => AsyncIterable<Buffer | Uint8Array>;
  validation?: (() => AsyncIterable<Buffer | Uint8Array>) | null;
}

export interface ExamineFilesOptions extends Omit<ExamineOptions, 'role' | 'screener' | 'arrays' | 'expectFormat'> {
  screening: ScreeningPolicy;
  /** Where to write the training arrays (`train/`) and the validation arrays (`valid/`); kept only when the files can train. */
  arraysDir?: string | null;
}

/**
 * A training file and its optional validation file, examined with the same settings: the
 * validation report is nested in the training report, and the pair can train only when both can.
 */
export async function examineFiles(files: FilesToExamine, options: ExamineFilesOptions): Promise<DatasetReport> {
  const { screening, arraysDir, ...shared } = options;
  const arrays = {
    training: arraysDir && options.model ? await TrainingArraysWriter.create(`${arraysDir}/train`) : null,
    validation: arraysDir && options.model && files.validation ? await TrainingArraysWriter.create(`${arraysDir}/valid`) : null,
  };
  const discard = () => Promise.all([arrays.training?.discard(), arrays.validation?.discard()]);
  let report: DatasetReport;
  try {
    report = await examineDataset(files.training(), { ...shared, role: 'training', screener: new Screener(screening), arrays: arrays.training });
    if (files.validation) {
      report.validation = await examineDataset(files.validation(), {
        ...shared,
        show: 0,
        role: 'validation',
        screener: new Screener(screening),
        arrays: arrays.validation,
        expectFormat: report.format,
      });
      report.can_train &&= report.validation.can_train;
    }
  } catch (error) {
    await discard();
    throw error;
  }
  if (!report.can_train) await discard();
  else await Promise.all([arrays.training?.finish(), arrays.validation?.finish()]);
  return report;
}

/** The token sequence the trainer gets for a supervised example (preference pairs: `encodePreference`). */
export function encodeExample(tokenizer: ModelTokenizer, example: Exclude<Example, { format: 'preference' }>): EncodedSequence {
  if (example.format === 'prompt_completion') return encodePromptCompletion(tokenizer, example.prompt, example.completion);
  return encodeChat(tokenizer, example.messages, { tools: example.tools });
}

function openaiTokens(counter: OpenAITokenCounter, example: Example): ExampleTokens {
  if (example.format === 'prompt_completion') return counter.promptCompletion(example.prompt, example.completion);
  if (example.format === 'chat') return counter.chat(example.messages, example.tools);
  // The shared input once, and both answers trained.
  const context = example.messages.map((message) => (message.role === 'assistant' ? { ...message, weight: 0 } : message));
  const chosen = counter.chat([...context, { ...example.preferred, weight: 1 }], example.tools);
  const rejected = counter.chat([{ ...example.nonPreferred, weight: 1 }]);
  // `chat` primes a reply with 3 tokens, once per conversation: the second answer is not a conversation of its own.
  return { total: chosen.total + rejected.total - 3, trained: chosen.trained + rejected.trained };
}

function countTrained(mask: readonly number[]): number {
  let trained = 0;
  for (const bit of mask) trained += bit;
  return trained;
}

function exampleWarnings(example: Example, line: number, warn: (category: WarningCategory, message: string, where: Partial<Location>) => void): void {
  if (example.format === 'prompt_completion') return;
  const roles = new Set(example.messages.map((message) => message.role));
  if (!roles.has('system')) warn('missing_system_message', 'The example has no system message.', { line, field: 'messages' });
  if (!roles.has('user')) warn('missing_user_message', 'The example has no user message.', { line, field: 'messages' });
  if (example.format === 'chat' && example.messages.every((message) => message.role !== 'assistant' || message.weight === 0)) {
    warn('no_trained_tokens', 'Every assistant message has weight 0, so the example teaches nothing.', { line, field: 'messages' });
  }
}

function screenExample(example: Example, line: number, screen: (text: string | null | undefined, where: Location) => void): void {
  if (example.format === 'prompt_completion') {
    screen(example.prompt, { line, message_index: null, field: 'prompt' });
    screen(example.completion, { line, message_index: null, field: 'completion' });
    return;
  }
  const inputField = example.format === 'preference' ? 'input.messages' : null;
  example.messages.forEach((message, index) => {
    screen(message.content, { line, message_index: index, field: inputField ? `${inputField}[${index}].content` : 'content' });
    if (message.tool_calls) screen(JSON.stringify(message.tool_calls), { line, message_index: index, field: 'tool_calls' });
  });
  if (example.format === 'preference') {
    screen(example.preferred.content, { line, message_index: null, field: 'preferred_output' });
    screen(example.nonPreferred.content, { line, message_index: null, field: 'non_preferred_output' });
  }
}
