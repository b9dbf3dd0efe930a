import type { ToolCallFormat } from '../tokenizer/tool-calls.js';
import type { OutputConstraint } from './backend.js';

/**
 * The grammars constrained requests send to the engine: Lark in llguidance's dialect, where
 * `%json {schema}` matches the JSON values a JSON schema allows (engine/tunelab_engine/grammar.py).
 * JSON is written without free whitespace and with the separators templates' `tojson` writes
 * (", " and ": "), so a constrained call reads as the calls a model was trained on.
 */

const JSON_STYLE = { whitespace_flexible: false, item_separator: ', ', key_separator: ': ' };

/** The engine's grammar for an output constraint. */
export function larkGrammar(constraint: OutputConstraint): string {
  switch (constraint.type) {
    case 'json_object':
      return jsonObjectGrammar();
    case 'json_schema':
      return jsonSchemaGrammar(constraint.schema, constraint.lenient);
    case 'tool_calls':
      return toolCallGrammar(constraint.format, constraint.functions, constraint.parallel, constraint.mistralCallsToken);
  }
}

/** Any JSON object (`response_format: {type: "json_object"}`). */
export function jsonObjectGrammar(): string {
  return `start: ${json({ type: 'object' })}`;
}

/**
 * Values of a JSON schema (`response_format` `json_schema`). `lenient` (a schema without
 * `strict`): keywords the library does not implement are left out rather than refused.
 */
export function jsonSchemaGrammar(schema: Record<string, unknown>, lenient: boolean): string {
  return `start: ${json(schema, lenient)}`;
}

/** A function the model may be made to call: its name and the JSON schema of its arguments, `strict` or not. */
export interface CallableFunction {
  name: string;
  parameters: Record<string, unknown>;
  strict: boolean;
}

/**
 * Output that is one call, or with `parallel` one or more, of the given functions, written the
 * way the model's family writes calls (`tool-calls.ts`). `mistralCallsToken` is the id of
 * Mistral's `[TOOL_CALLS]` special token.
 */
export function toolCallGrammar(
  format: ToolCallFormat,
  functions: readonly CallableFunction[],
  parallel: boolean,
  mistralCallsToken: number | null,
): string {
  const argumentsKey = format === 'llama3' ? 'parameters' : 'arguments';
  const call = json(
    {
      anyOf: functions.map((fn) => ({
        type: 'object',
        properties: { name: { const: fn.name }, [argumentsKey]: fn.parameters },
        required: ['name', argumentsKey],
        additionalProperties: false,
      })),
    },
    functions.some((fn) => !fn.strict),
  );
  switch (format) {
    case 'hermes':
      return [`start: call${parallel ? ' ("\\n" call)*' : ''}`, `call: "<tool_call>\\n" ${call} "\\n</tool_call>"`].join('\n');
    case 'llama3':
      return `start: ${call}`;
    case 'mistral':
      return [`start: ${mistralCallsToken === null ? '' : `<[${mistralCallsToken}]> `}"[" call${parallel ? ' (", " call)*' : ''} "]"`, `call: ${call}`].join('\n');
  }
}

function json(schema: Record<string, unknown>, lenient = false): string {
  return `%json ${JSON.stringify({ ...schema, 'x-guidance': { ...JSON_STYLE, lenient } })}`;
}
