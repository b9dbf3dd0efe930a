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
