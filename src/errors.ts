/**
 * Errors a service raises when a request cannot be carried out. They carry OpenAI's error
 * fields (type, param, code) but no HTTP status: the API layer maps each kind to a status.
 */
export type ErrorKind =
  | 'invalid_request'
  | 'authentication'
  | 'permission'
  | 'not_found'
  | 'too_large'
  | 'conflict'
  /** Not the request's fault and worth retrying: a model still loading. */
  | 'unavailable'
  /** The server's own failure, with a message worth showing (an engine that died). */
  | 'server';

export class ServiceError extends Error {
  readonly kind: ErrorKind;
  readonly param: string | null;
  readonly code: string | null;

  constructor(kind: ErrorKind, message: string, options: { param?: string | null; code?: string | null } = {}) {
    super(message);
    this.name = 'ServiceError';
    this.kind = kind;
    this.param = options.param ?? null;
    this.code = options.code ?? null;
  }
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new ServiceError('invalid_request', message, { param, code });

/** OpenAI's wording for a missing object, e.g. "No such File object: file-abc". */
export const noSuch = (objectName: string, id: string, param: string | null = null) =>
  new ServiceError('not_found', `No such ${objectName} object: ${id}`, { param });
