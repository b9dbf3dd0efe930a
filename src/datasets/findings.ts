/**
 * What the dataset doctor finds in a file: errors (the file cannot train), warnings (it can, but a
 * person should look) and screening findings. Every finding says where it is: the 1-based line of
 * the JSONL file, the message index inside `messages` when it concerns one message, and the field.
 */

/**
 * Error categories. The first seven are the names the fine-tuning guide's checking script uses;
 * the rest are ours.
 */
export const ERROR_CATEGORIES = [
  // The guide's.
  'data_type', // a line (or a message) is valid JSON but not an object
  'missing_messages_list', // `messages` missing, not a list, or empty
  'message_missing_key', // a message without `role` or `content`
  'message_unrecognized_key', // a message key other than role, content, name, weight, tool_calls, tool_call_id, function_call
  'unrecognized_role', // a role other than system, user, assistant, tool, function
  'missing_content', // content empty or not a string (or not a list of text parts)
  'example_missing_assistant_message', // no assistant message to learn from
  // Ours.
  'empty_file', // no examples at all
  'invalid_utf8', // the line's bytes are not UTF-8
  'invalid_json', // the line is not JSON (the message gives the column and a snippet)
  'unrecognized_key', // an example-level key the format does not have
  'mixed_formats', // the example's format differs from the file's (decided by the first example)
  'invalid_weight', // `weight` other than 0 or 1, or on a message that is not the assistant's
  'invalid_name', // `name` not a non-empty string
  'invalid_tools', // `tools` not a list of {type: "function", function: {name, ...}}
  'invalid_tool_calls', // assistant `tool_calls` malformed, or a tool message without tool_call_id
  'invalid_prompt', // prompt/completion format: `prompt` missing or not a string
  'invalid_completion', // prompt/completion format: `completion` missing, empty or not a string
  'invalid_preference', // preference format: `input.messages`, `preferred_output` or `non_preferred_output` malformed
  'invalid_n_examples', // fewer than 10 examples (OpenAI's wording)
  'template_error', // the model's chat template refuses the conversation (says why)
] as const;
export type ErrorCategory = (typeof ERROR_CATEGORIES)[number];

export const WARNING_CATEGORIES = [
  'missing_system_message',
  'missing_user_message',
  'too_long', // longer than the context: the message says how many tokens will be cut
  'duplicate_example', // byte-identical to an earlier example (the message names its line)
  'no_trained_tokens', // every assistant message has weight 0: the example teaches nothing
] as const;
export type WarningCategory = (typeof WARNING_CATEGORIES)[number];

/** Where a finding is. `line` is null only for findings about the whole file (empty, too few examples). */
export interface Location {
  line: number | null;
  /** Index into `messages` (or into the preference output list), when the finding is about one message. */
  message_index: number | null;
  /** The key concerned, as a path when nested: "content", "tool_calls[0].function.name", "input.messages". */
  field: string | null;
}

export interface DatasetError extends Location {
  category: ErrorCategory;
  /** A plain reason a person understands, without the location (the report adds it). */
  message: string;
}

export interface DatasetWarning extends Location {
  category: WarningCategory;
  message: string;
}

/** Screening: things that should not be trained into a model. */
export const SCREENING_CATEGORIES = [
  'email',
  'phone', // international numbers and mainland China mobile numbers
  'payment_card', // card numbers that pass the Luhn check
  'national_id', // PRC resident identity numbers with a valid check digit
  'api_key', // sk-..., AKIA..., and similar secrets
  'private_key', // -----BEGIN ... PRIVATE KEY-----
  'blocklist', // a configured term
  'moderation', // flagged by an external /v1/moderations endpoint
] as const;
export type ScreeningCategory = (typeof SCREENING_CATEGORIES)[number];
export type ScreeningAction = 'off' | 'warn' | 'block';

export interface ScreeningFinding extends Location {
  category: ScreeningCategory;
  action: Exclude<ScreeningAction, 'off'>;
  /** The matched text with most of it masked, so the report itself does not spread the secret. */
  excerpt: string;
}

/** A finding's place and reason in one phrase: "Line 3, message 1, field \"content\": ...". */
export function describeError(error: DatasetError): string {
  if (error.line === null) return error.message;
  const parts = [`Line ${error.line}`];
  if (error.message_index !== null) parts.push(`message ${error.message_index}`);
  if (error.field !== null) parts.push(`field "${error.field}"`);
  return `${parts.join(', ')}: ${error.message}`;
}
