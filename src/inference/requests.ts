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

const functionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a function name is 1 to 64 letters, digits, underscores or dashes');
const jsonSchema = z.record(z.string(), z.unknown());

const functionDefinition = z.strictObject({
  name: functionName,
  description: z.string().optional(),
  parameters: jsonSchema.optional(),
  strict: z.boolean().nullish(),
});

const tool = z.looseObject({ type: z.string() }).pipe(
  z.discriminatedUnion('type', [z.strictObject({ type: z.literal('function'), function: functionDefinition })], {
    error: (issue) => (issue.code === 'invalid_union' ? 'only tools of type "function" are supported by tunelab' : undefined),
  }),
);

const toolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string() }) }),
]);

const toolCall = z.strictObject({
  id: z.string(),
  type: z.literal('function'),
  function: z.strictObject({ name: z.string(), arguments: z.string() }),
});

const message = z.discriminatedUnion('role', [
  z.strictObject({ role: z.enum(['system', 'developer', 'user']), content, name: z.string().optional() }),
  z.strictObject({
    role: z.literal('assistant'),
    content: content.nullish(),
    name: z.string().optional(),
    refusal: z.string().nullish(),
    tool_calls: z.array(toolCall).nullish(),
    function_call: z.strictObject({ name: z.string(), arguments: z.string() }).nullish(),
  }),
  z.strictObject({ role: z.literal('tool'), content, tool_call_id: z.string() }),
  z.strictObject({ role: z.literal('function'), content: z.string().nullable(), name: z.string() }),
]);

export const responseFormat = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    json_schema: z.strictObject({ name: z.string().min(1), description: z.string().optional(), schema: jsonSchema.optional(), strict: z.boolean().nullish() }),
  }),
]);

export const chatCompletionRequest = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1, 'messages must hold at least one message'),
  max_tokens: maxTokens,
  max_completion_tokens: maxTokens,
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int('top_logprobs must be a whole number').min(0).max(20).nullish(),
  tools: z.array(tool).max(128).nullish(),
  tool_choice: toolChoice.nullish(),
  functions: z.array(functionDefinition).min(1).max(128).nullish(),
  function_call: z.union([z.enum(['none', 'auto']), z.strictObject({ name: z.string() })]).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  response_format: responseFormat.nullish(),
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
  logprobs: z.number().int('logprobs must be a whole number').min(0).max(5).nullish(),
});

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
/** What chat and legacy completion requests share: the model, sampling, choices, streaming. */
export type SamplingRequest = z.infer<z.ZodObject<typeof sampling>>;
export type CompletionRequest = z.infer<typeof completionRequest>;
export type ChatMessage = ChatCompletionRequest['messages'][number];
export type ChatTool = NonNullable<ChatCompletionRequest['tools']>[number];
export type FunctionDefinition = z.infer<typeof functionDefinition>;
export type ResponseFormat = z.infer<typeof responseFormat>;
