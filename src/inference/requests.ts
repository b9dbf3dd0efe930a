import { z } from 'zod';

/**
 * What valid `POST /v1/chat/completions` and `POST /v1/completions` bodies are, field by field,
 * with OpenAI's ranges. Whether the model exists and the prompt fits is the service's question.
 */

/** OpenAI parameters these models cannot honour: refused by name rather than silently ignored. */
const unsupported = (what: string) =>
  z
    .unknown()
    .refine((value) => value === undefined || value === null || value === false, `${what} is not supported by tunelab's models yet`)
    .optional();

const sampling = {
  model: z.string().min(1, 'model is required'),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  n: z.number().int('n must be a whole number').min(1).max(128).nullish(),
  stop: z
    .union([z.string().min(1), z.array(z.string().min(1)).max(4, 'stop takes at most 4 sequences')])
    .nullish(),
  seed: z.number().int('seed must be a whole number').nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional(), include_obfuscation: z.boolean().optional() }).nullish(),
  user: z.string().optional(),
  logit_bias: unsupported('logit_bias'),
  logprobs: unsupported('logprobs'),
  service_tier: z.string().nullish(),
};

const maxTokens = z.number().int('max_tokens must be a whole number').min(1).nullish();

// Checked part by part, so an image part is named as such rather than failing the string branch.
const content = z.union([z.string(), z.array(z.looseObject({ type: z.string(), text: z.string().optional() }))]).superRefine((value, ctx) => {
  if (typeof value === 'string') return;
  value.forEach((part, index) => {
    if (part.type !== 'text' || typeof part.text !== 'string') {
      ctx.addIssue({ code: 'custom', path: [index], message: `a content part of type "${part.type}": these models take text only` });
    }
  });
});

const message = z.discriminatedUnion('role', [
  z.strictObject({ role: z.enum(['system', 'developer', 'user']), content, name: z.string().optional() }),
  z.strictObject({
    role: z.literal('assistant'),
    content: content.nullish(),
    name: z.string().optional(),
    refusal: z.string().nullish(),
    tool_calls: z.array(z.looseObject({ id: z.string(), type: z.string() })).optional(),
  }),
  z.strictObject({ role: z.literal('tool'), content, tool_call_id: z.string() }),
]);

export const chatCompletionRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1, 'messages must hold at least one message'),
  max_tokens: maxTokens,
  max_completion_tokens: maxTokens,
  top_logprobs: unsupported('top_logprobs'),
  tools: unsupported('tools'),
  tool_choice: unsupported('tool_choice'),
  functions: unsupported('functions'),
  function_call: unsupported('function_call'),
  parallel_tool_calls: z.boolean().nullish(),
  response_format: z
    .looseObject({ type: z.string() })
    .refine((format) => format.type === 'text', 'response_format other than {"type": "text"} is not supported by tunelab yet')
    .nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  store: z.boolean().nullish(),
});

const tokenIds = z.array(z.number().int().min(0)).min(1);

export const completionRequest = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)]),
  // OpenAI's default for the legacy endpoint, also when null is sent.
  max_tokens: maxTokens.transform((value) => value ?? 16),
  echo: z.boolean().nullish(),
  best_of: z
    .number()
    .int()
    .refine((value) => value === 1, 'best_of other than 1 is not supported by tunelab yet')
    .nullish(),
  suffix: unsupported('suffix'),
});

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
/** What chat and legacy completion requests share: the model, sampling, choices, streaming. */
export type SamplingRequest = z.infer<z.ZodObject<typeof sampling>>;
export type CompletionRequest = z.infer<typeof completionRequest>;
export type ChatMessage = ChatCompletionRequest['messages'][number];
