import { z } from 'zod';

/**
 * The engine's protocol (engine/README.md) on this side of the process boundary: the training spec
 * the server writes, the JSON-line events the engine prints, and the messages `serve` reads and
 * writes. Every line from the engine is checked against these schemas before the server reads it;
 * a line that fails is not an event (it is logged as engine output).
 */

/** Which weights a run trains: a LoRA adapter beside the frozen model, or every weight. */
export type Training = 'lora' | 'full';

/** The objective a run trains: cross-entropy on the trained tokens, or DPO over chosen/rejected pairs. */
export type Objective = 'supervised' | 'dpo';

/** `spec.json` of `train` (engine/README.md, "spec.json"); absent fields take the engine's defaults. */
export interface TrainingSpec {
  model: string;
  base_model_name?: string;
  train_data: string;
  valid_data?: string | null;
  output_dir: string;
  work_dir: string;
  resume_from?: string | null;
  training?: Training;
  lora?: { rank?: number; alpha?: number; dropout?: number; target_modules?: string[] | null };
  /** A LoRA adapter (a fine-tune's) the run continues instead of starting a new one. */
  init_adapter?: string | null;
  method?: Objective;
  dpo?: { beta?: number };
  n_epochs: number;
  batch_size: number;
  learning_rate: number;
  seq_len?: number;
  gradient_accumulation_steps?: number;
  warmup_steps?: number;
  lr_schedule?: 'cosine' | 'linear' | 'constant';
  min_lr_ratio?: number;
  weight_decay?: number;
  adam_beta1?: number;
  adam_beta2?: number;
  adam_eps?: number;
  max_grad_norm?: number | null;
  seed?: number;
  eval_every?: number;
  eval_batches?: number;
  gradient_checkpointing?: boolean;
  dtype?: 'auto' | 'bfloat16' | 'float32';
  device?: string;
  threads?: number | null;
}

// The engine writes NaN and infinities as null (JSON has neither).
const metric = z.number().nullable();
const stamped = { time: z.number() };

const started = z.object({
  ...stamped,
  type: z.literal('started'),
  total_steps: z.number(),
  steps_per_epoch: z.number(),
  n_epochs: z.number(),
  resumed_from_step: z.number(),
  tokens_per_epoch: z.number(),
  examples: z.number(),
  truncated_examples: z.number(),
  packing_efficiency: z.number(),
  trainable_parameters: z.number(),
  parameters: z.number(),
  training: z.enum(['lora', 'full']),
  method: z.enum(['supervised', 'dpo']),
  device: z.string(),
  dtype: z.string(),
  threads: z.number(),
});

const step = z.object({
  ...stamped,
  type: z.literal('step'),
  step: z.number(),
  total_steps: z.number(),
  epoch: z.number(),
  train_loss: metric,
  train_mean_token_accuracy: metric,
  train_reward_accuracy: metric.optional(),
  train_chosen_reward: metric.optional(),
  train_rejected_reward: metric.optional(),
  train_reward_margin: metric.optional(),
  lr: z.number(),
  tokens: z.number(),
  trained_tokens: z.number(),
  tokens_per_second: z.number(),
  elapsed_s: z.number(),
});

const evaluation = z.object({
  ...stamped,
  type: z.literal('eval'),
  step: z.number(),
  total_steps: z.number(),
  epoch: z.number(),
  valid_loss: metric,
  valid_mean_token_accuracy: metric,
  full_valid_loss: metric.optional(),
  full_valid_mean_token_accuracy: metric.optional(),
  valid_reward_accuracy: metric.optional(),
  valid_chosen_reward: metric.optional(),
  valid_rejected_reward: metric.optional(),
  valid_reward_margin: metric.optional(),
  full_valid_reward_accuracy: metric.optional(),
  full_valid_reward_margin: metric.optional(),
});

const checkpoint = z.object({ ...stamped, type: z.literal('checkpoint'), step: z.number(), epoch: z.number(), path: z.string() });
const cancelled = z.object({ ...stamped, type: z.literal('cancelled'), step: z.number(), path: z.string() });

/** The last event of a successful command: `train` (with the run's totals), `init` (with `parameters`) or `merge`. */
const done = z.object({
  ...stamped,
  type: z.literal('done'),
  path: z.string(),
  step: z.number().optional(),
  trained_tokens: z.number().optional(),
  packing_efficiency: z.number().nullable().optional(),
  elapsed_s: z.number().optional(),
  parameters: z.number().optional(),
});

const generated = z.object({
  ...stamped,
  type: z.literal('generated'),
  output_ids: z.array(z.number()),
  finish_reason: z.enum(['stop', 'length']),
});

/** A command's failure (its last line), or one serve request's when `id` is set. */
const failure = z.object({ ...stamped, type: z.literal('error'), code: z.string(), message: z.string(), id: z.string().optional() });

/** `build-native`'s one line: whether the C kernels were built, and whether this CPU runs them. */
const native = z.object({
  ...stamped,
  type: z.literal('native'),
  built: z.boolean(),
  runs_here: z.boolean(),
  path: z.string().nullable(),
  reason: z.string().nullable(),
});

const engineEvent = z.discriminatedUnion('type', [started, step, evaluation, checkpoint, cancelled, done, generated, failure, native]);

export type StartedEvent = z.infer<typeof started>;
export type StepEvent = z.infer<typeof step>;
export type EvalEvent = z.infer<typeof evaluation>;
export type DoneEvent = z.infer<typeof done>;
export type ErrorEvent = z.infer<typeof failure>;
/** Any event of `train`, `init`, `merge` or `generate`. */
export type EngineEvent = z.infer<typeof engineEvent>;

/**
 * One training step's metrics, one shape from the engine's `step` event (and the `eval` after it)
 * through the job's metrics event to the result file. The validation fields only at the steps
 * evaluated; a loss that diverged is null.
 */
export interface StepMetrics {
  step: number;
  total_steps: number;
  train_loss: number | null;
  train_mean_token_accuracy: number | null;
  valid_loss?: number | null;
  valid_mean_token_accuracy?: number | null;
  full_valid_loss?: number | null;
  full_valid_mean_token_accuracy?: number | null;
  /** DPO only: the share of pairs whose chosen answer earns the larger reward, the mean rewards, and their mean difference. */
  train_reward_accuracy?: number | null;
  train_chosen_reward?: number | null;
  train_rejected_reward?: number | null;
  train_reward_margin?: number | null;
  valid_reward_accuracy?: number | null;
  valid_chosen_reward?: number | null;
  valid_rejected_reward?: number | null;
  valid_reward_margin?: number | null;
  full_valid_reward_accuracy?: number | null;
  full_valid_reward_margin?: number | null;
}

/** The metrics of a step event, and of an eval event, that a job's StepMetrics carries (DPO's only when present). */
export const STEP_FIELDS = ['train_loss', 'train_mean_token_accuracy', 'train_reward_accuracy', 'train_chosen_reward', 'train_rejected_reward', 'train_reward_margin'] as const;
export const EVAL_FIELDS = [
  'valid_loss',
  'valid_mean_token_accuracy',
  'full_valid_loss',
  'full_valid_mean_token_accuracy',
  'valid_reward_accuracy',
  'valid_chosen_reward',
  'valid_rejected_reward',
  'valid_reward_margin',
  'full_valid_reward_accuracy',
  'full_valid_reward_margin',
] as const;

// --- serve -------------------------------------------------------------------------------------

/** A generation request as `serve` reads it (engine/README.md, "serve"). */
export interface GenerateMessage {
  type: 'generate';
  id: string;
  input_ids: readonly number[];
  adapter: string | null;
  max_tokens: number;
  temperature: number;
  top_p: number;
  seed: number | null;
  stop_ids: readonly number[];
  presence_penalty: number;
  frequency_penalty: number;
  /** A Lark grammar (llguidance's dialect) the output must match, or null for free text. */
  grammar: string | null;
  /** Alternatives to report per token (0-20) with each token's log-probability, or null for none. */
  logprobs: number | null;
}

export interface CancelMessage {
  type: 'cancel';
  id: string;
}

export type ServeMessage = GenerateMessage | CancelMessage;

const ready = z.object({
  ...stamped,
  type: z.literal('ready'),
  vocab_size: z.number(),
  context_length: z.number(),
  device: z.string(),
  dtype: z.string(),
  max_batch: z.number(),
});
/** A sampled token's log-probability, and the most likely alternatives' as [id, logprob] pairs. */
const tokenLogprob = z.object({ token: z.number(), logprob: z.number(), top: z.array(z.tuple([z.number(), z.number()])) });
export type TokenLogprob = z.infer<typeof tokenLogprob>;
const tokens = z.object({ ...stamped, type: z.literal('tokens'), id: z.string(), ids: z.array(z.number()), logprobs: z.array(tokenLogprob).optional() });
const finished = z.object({
  ...stamped,
  type: z.literal('done'),
  id: z.string(),
  finish_reason: z.enum(['stop', 'length', 'cancelled']),
  prompt_tokens: z.number(),
  completion_tokens: z.number(),
});

const serveEvent = z.discriminatedUnion('type', [ready, tokens, finished, failure]);

export type ServeEvent = z.infer<typeof serveEvent>;

function parse<T>(schema: z.ZodType<T>, line: string): T | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  const result = schema.safeParse(value);
  return result.success ? result.data : null;
}

/** The events of one type, typed as that type. */
export function ofType<T extends EngineEvent['type']>(events: readonly EngineEvent[], type: T): Array<Extract<EngineEvent, { type: T }>> {
  return events.filter((event): event is Extract<EngineEvent, { type: T }> => event.type === type);
}

/** An event of `train`, `init`, `merge` or `generate`, or null when the line is not one. */
export const parseEngineEvent = (line: string): EngineEvent | null => parse(engineEvent, line);

/** An event of `serve`, or null when the line is not one. */
export const parseServeEvent = (line: string): ServeEvent | null => parse(serveEvent, line);
