import { z } from 'zod';

/**
 * What a valid `POST /v1/responses` body is, field by field. What these models cannot do is
 * refused by name: built-in tools (web search, file search, ...), reasoning, background runs.
 */

const refused = (what: string) =>
  z
    .unknown()
    .refine((value) => value === undefined || value === null, `${what} is not supported by tunelab's models`)
    .optional();

const inputText = z.strictObject({ type: z.enum(['input_text', 'output_text']), text: z.string(), annotations: z.array(z.unknown()).optional() });

const content = z.union([z.string(), z.array(z.looseObject({ type: z.string() }).pipe(
  z.discriminatedUnion('type', [inputText], {
    error: (issue) => (issue.code === 'invalid_union' ? 'a content part other than text: these models take text only' : undefined),
  }),
))]);

const messageItem = z.strictObject({
  type: z.literal('message').optional(),
  role: z.enum(['user', 'assistant', 'system', 'developer']),
  content,
  id: z.string().optional(),
  status: z.string().optional(),
});

const functionCallItem = z.strictObject({
  type: z.literal('function_call'),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
  id: z.string().optional(),
  status: z.string().optional(),
});

const functionCallOutputItem = z.strictObject({
  type: z.literal('function_call_output'),
  call_id: z.string().min(1),
  output: z.string(),
  id: z.string().optional(),
  status: z.string().optional(),
});

// Checked by type first, so an item of another type (reasoning, a web search call) is named.
const item = z.looseObject({ type: z.string().optional() }).superRefine((value, ctx) => {
  const type = value.type ?? 'message';
  if (!['message', 'function_call', 'function_call_output'].includes(type)) {
    ctx.addIssue({ code: 'custom', path: ['type'], message: `input items of type "${type}" are not supported by tunelab (messages, function_call and function_call_output are)` });
  }
}).pipe(z.union([messageItem, functionCallItem, functionCallOutputItem]));

const functionTool = z.strictObject({
  type: z.literal('function'),
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, 'a function name is 1 to 64 letters, digits, underscores or dashes'),
  description: z.string().nullish(),
  parameters: z.record(z.string(), z.unknown()).nullish(),
  strict: z.boolean().nullish(),
});

const tool = z.looseObject({ type: z.string() }).superRefine((value, ctx) => {
  if (value.type !== 'function') {
    ctx.addIssue({ code: 'custom', path: ['type'], message: `the built-in tool "${value.type}" is not supported by tunelab; only function tools are` });
  }
}).pipe(functionTool);

const textFormat = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    name: z.string().min(1),
    schema: z.record(z.string(), z.unknown()),
    description: z.string().optional(),
    strict: z.boolean().nullish(),
  }),
]);

export const responseCreateRequest = z.strictObject({
  model: z.string().min(1, 'model is required'),
  input: z.union([z.string(), z.array(item).min(1)]),
  instructions: z.string().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  max_output_tokens: z.number().int('max_output_tokens must be a whole number').min(1).nullish(),
  tools: z.array(tool).max(128).nullish(),
  tool_choice: z.union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), name: z.string() })]).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  text: z.strictObject({ format: textFormat.optional(), verbosity: z.enum(['low', 'medium', 'high']).nullish() }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_obfuscation: z.boolean().optional() }).nullish(),
  store: z.boolean().nullish(),
  previous_response_id: z.string().min(1).nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  user: z.string().optional(),
  safety_identifier: z.string().optional(),
  truncation: z.enum(['disabled']).nullish(),
  service_tier: z.string().nullish(),
  reasoning: refused('reasoning'),
  background: z.boolean().refine((value) => !value, 'background responses are not supported by tunelab').nullish(),
  include: z.array(z.string()).max(0, 'include is not supported by tunelab').nullish(),
  conversation: refused('conversation'),
  prompt: refused('prompt'),
  top_logprobs: refused('top_logprobs'),
  max_tool_calls: refused('max_tool_calls'),
});

export type ResponseCreateRequest = z.infer<typeof responseCreateRequest>;
export type ResponseInputItem = Exclude<ResponseCreateRequest['input'], string>[number];
