import { z } from 'zod';
import { invalidRequest } from '../errors.js';
import type { PageRequest } from '../store/pages.js';

/** Parses a body or query with a schema; the first problem becomes a 400 naming its field. */
export function parseWith<T extends z.ZodTypeAny>(schema: T, input: unknown): z.infer<T> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = mostSpecific(result.error.issues[0]!);
  if (issue.code === 'unrecognized_keys') {
    const name = [...issue.path, issue.keys[0]].join('.');
    throw invalidRequest(`Unrecognized request argument supplied: ${name}`, name);
  }
  const param = issue.path.join('.') || null;
  const given = issue.path.reduce<unknown>((value, key) => (value as Record<PropertyKey, unknown> | undefined)?.[key], input);
  if (issue.code === 'invalid_type' && given === undefined) {
    throw invalidRequest(`Missing required parameter: '${param}'.`, param);
  }
  throw invalidRequest(param ? `Invalid '${param}': ${issue.message}` : issue.message, param);
}

/**
 * For a value that matched no branch of a union ("auto" or a number), the branch that came
 * closest says more than "Invalid input": a number out of range, say, rather than not "auto".
 */
function mostSpecific(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code !== 'invalid_union') return issue;
  const closest = issue.errors.flat().find((i) => i.code !== 'invalid_value');
  return closest ? { ...closest, path: [...issue.path, ...closest.path] } : issue;
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Refuses an object key `__proto__`, `constructor` or `prototype` anywhere in a request's JSON
 * body: copied into a plain object such a key is dropped or changes the object's prototype, so
 * metadata and every other free-form map would lose it silently. The 400 names the key and where.
 */
export function refuseForbiddenKeys(body: unknown): void {
  const stack: Array<{ value: unknown; path: string[] }> = [{ value: body, path: [] }];
  while (stack.length) {
    const { value, path } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, child] of Object.entries(value)) {
      if (!Array.isArray(value) && FORBIDDEN_KEYS.has(key)) throw forbiddenKey(key, path.join('.'));
      stack.push({ value: child, path: [...path, key] });
    }
  }
}

/** The same for query parameters: `metadata[__proto__]=x` as well as `__proto__=x`. */
export function refuseForbiddenQueryKeys(query: unknown): void {
  for (const name of Object.keys(query ?? {})) refuseForbiddenName(name);
}

/** A form field's or query parameter's name, brackets read as nesting. */
export function refuseForbiddenName(name: string): void {
  const parts = name.split(/[[\]]+/).filter(Boolean);
  const key = parts.find((part) => FORBIDDEN_KEYS.has(part));
  if (key !== undefined) throw forbiddenKey(key, parts.slice(0, parts.indexOf(key)).join('.'));
}

function forbiddenKey(key: string, where: string): Error {
  return invalidRequest(
    `Invalid key '${key}'${where ? ` in '${where}'` : ''}: '__proto__', 'constructor' and 'prototype' cannot be used as keys.`,
    where || key,
    'invalid_key',
  );
}

export function requireObjectBody(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalidRequest('The request body must be a JSON object.');
  }
  return body as Record<string, unknown>;
}

/**
 * The cursor parameters of a list endpoint. Built once per endpoint, not per request: building
 * a schema costs more than using it. Lists OpenAI keeps newest first ignore an `order`.
 */
export function pageQuery(limits: { max: number; default: number; ordered?: boolean }): (query: unknown) => PageRequest {
  const schema = z.object({
    after: z.string().min(1).optional(),
    limit: z.coerce.number().int().min(1).max(limits.max).default(limits.default),
    order: limits.ordered ? z.enum(['asc', 'desc']).default('desc') : z.unknown().optional().transform(() => 'desc' as const),
  });
  return (query) => parseWith(schema, query);
}

/** OpenAI's list envelope; first_id and last_id are what the SDK and people page with. */
export function listBody<T extends { id: string }>(page: { data: T[]; hasMore: boolean }) {
  return {
    object: 'list' as const,
    data: page.data,
    first_id: page.data[0]?.id ?? null,
    last_id: page.data.at(-1)?.id ?? null,
    has_more: page.hasMore,
  };
}
