import type { GenerateRequest, GenerationUpdate, ServeInfo } from '../engine/serve-process.js';
import type { ToolCallFormat } from '../tokenizer/tool-calls.js';
import type { CallableFunction } from './grammars.js';

/**
 * The seam between the API's behaviour (prompts, choices, stop strings, usage, chunks) and what
 * generates tokens: tunelab's engine (`engine-backend.ts`) or llama.cpp (`llamacpp-backend.ts`).
 * Both take token ids in and give token ids out, so the chat template, the tokenizer and the
 * text a client sees are the same whichever answers.
 */
export type BackendName = 'engine' | 'llamacpp';

/** What the output must match, in neither backend's grammar language: each translates it. */
export type OutputConstraint =
  | { type: 'json_object' }
  /** `lenient` (a schema without `strict`): keywords a backend does not implement are left out rather than refused. */
  | { type: 'json_schema'; schema: Record<string, unknown>; lenient: boolean }
  /** One call, or with `parallel` one or more, of `functions`, written as the model's family writes calls. */
  | { type: 'tool_calls'; format: ToolCallFormat; functions: CallableFunction[]; parallel: boolean; mistralCallsToken: number | null };

/** One generation, in token ids: the engine's request, with a constraint in place of its grammar and no adapter (the model names it). */
export type TokenRequest = Omit<GenerateRequest, 'adapter' | 'grammar'> & { constraint: OutputConstraint | null };

export interface TokenGenerator {
  /** Token ids as they are sampled, then `done`; leaving early or `signal` aborting cancels the generation. */
  generate(request: TokenRequest, signal?: AbortSignal): AsyncGenerator<GenerationUpdate>;
}

/** A model loaded by a backend, lent to one request; `release` when the request is over. */
export interface BackendLease {
  generator: TokenGenerator;
  info: ServeInfo;
  release(): void;
}

/** Which backend answers a model, and with what weights (shown as the completion's `system_fingerprint`). */
export interface ServingChoice {
  backend: BackendName;
  /** The GGUF quantization llama.cpp serves; null for the engine. */
  quantization: string | null;
}
