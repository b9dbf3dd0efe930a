import type { Llama, LlamaGrammar } from 'node-llama-cpp';
import { GenerationError } from '../engine/serve-process.js';
import type { OutputConstraint } from './backend.js';

/**
 * Output constraints as llama.cpp grammars (GBNF), the JSON ones written by node-llama-cpp's
 * JSON-schema converter. That converter ends its root rule with four newlines (node-llama-cpp's
 * chat stops on them); here the grammar ends where the JSON does, so llama.cpp's sampler then
 * allows only the end-of-turn token, as the engine's grammar does.
 */
export async function llamaGrammar(llama: Llama, constraint: OutputConstraint): Promise<LlamaGrammar> {
  switch (constraint.type) {
    case 'json_object':
      return llama.createGrammar({ grammar: await jsonRules({ type: 'object', additionalProperties: true }, llama) });
    case 'json_schema':
      return llama.createGrammar({ grammar: await jsonRules(constraint.schema, llama) });
    case 'tool_calls': {
      const argumentsKey = constraint.format === 'llama3' ? 'parameters' : 'arguments';
      const call = {
        oneOf: constraint.functions.map((fn) => ({
          type: 'object',
          properties: { name: { const: fn.name }, [argumentsKey]: fn.parameters },
          required: ['name', argumentsKey],
          additionalProperties: false,
        })),
      };
      const rules = (await jsonRules(call, llama)).replace(/^root ::=/m, 'call ::=');
      if (constraint.format === 'hermes') {
        const repeat = constraint.parallel ? ' ("\\n" tool-call)*' : '';
        return llama.createGrammar({ grammar: `root ::= tool-call${repeat}\ntool-call ::= "<tool_call>\\n" call "\\n</tool_call>"\n${rules}` });
      }
      if (constraint.format === 'llama3') return llama.createGrammar({ grammar: `root ::= call\n${rules}` });
      throw new GenerationError('unsupported', `Forced ${constraint.format} tool calls are served by the engine backend only, not by llama.cpp.`);
    }
  }
}

const TRAILER = ' "\\n\\n\\n\\n" [\\n]*';

/** The GBNF of a JSON schema, its root rule matching the JSON value alone. */
async function jsonRules(schema: Record<string, unknown>, llama: Llama): Promise<string> {
  let rules: string;
  try {
    rules = (await llama.createGrammarForJsonSchema(withJsonDefaults(schema) as never)).grammar;
  } catch (error) {
    throw new GenerationError('invalid_grammar', (error as Error).message);
  }
  const root = rules.split('\n').findIndex((line) => line.startsWith('root ::='));
  const lines = rules.split('\n');
  if (root < 0 || !lines[root]!.endsWith(TRAILER)) throw new Error("node-llama-cpp's JSON-schema grammar no longer has the shape this code expects");
  lines[root] = lines[root]!.slice(0, -TRAILER.length);
  return lines.join('\n');
}

/**
 * Where node-llama-cpp's converter reads a schema otherwise than JSON Schema: an object schema
 * naming no properties allows any (it would allow only `{}`), and `anyOf` is read as `oneOf` (the
 * converter knows only the latter; a generated value matching one branch is what both mean here).
 */
function withJsonDefaults(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(withJsonDefaults);
  if (schema === null || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    const keep = key === 'const' || key === 'enum' ? value : withJsonDefaults(value);
    out[key === 'anyOf' ? 'oneOf' : key] = keep;
  }
  if (out.type === 'object' && !('additionalProperties' in out)) out.additionalProperties = !('properties' in out);
  return out;
}
