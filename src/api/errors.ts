import type { FastifyError, FastifyReply } from 'fastify';
import { type ErrorKind, ServiceError } from '../errors.js';

const STATUS: Record<ErrorKind, number> = {
  invalid_request: 400,
  authentication: 401,
  permission: 403,
  not_found: 404,
  too_large: 413,
  conflict: 409,
  unavailable: 503,
  server: 500,
};

/** OpenAI's error `type` for a service error. */
export const errorType = (error: ServiceError) => (STATUS[error.kind] >= 500 ? 'server_error' : 'invalid_request_error');

interface ErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** Fastify's and its plugins' own errors, in the words a client of OpenAI's API expects. */
function fromFastify(error: FastifyError, maxUploadBytes: number): [number, ErrorBody] | undefined {
  const body = (message: string, param: string | null = null, code: string | null = null): ErrorBody => ({
    message,
    type: 'invalid_request_error',
    param,
    code,
  });
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return [400, body(`Unsupported Content-Type for this request: ${error.message}`, null, 'unsupported_content_type')];
    case 'FST_ERR_BAD_URL':
      return [400, body(`The URL could not be decoded: ${error.message}`)];
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return [413, body('The request body is too large.', null, 'request_too_large')];
    case 'FST_REQ_FILE_TOO_LARGE':
      return [413, body(`The file is larger than this server accepts (${maxUploadBytes} bytes).`, 'file', 'file_too_large')];
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return [400, body('Upload one file per request, with the fields file and purpose.', 'file')];
    default:
      // Anything else Fastify refuses as the client's fault keeps its status, in OpenAI's body.
      return error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
        ? [error.statusCode, body(error.message)]
        : undefined;
  }
}

export function sendError(reply: FastifyReply, error: unknown, maxUploadBytes: number): FastifyReply {
  // Set here too: errors the router raises before any hook runs still carry the id.
  reply.header('x-request-id', reply.request.id);
  let status: number;
  let body: ErrorBody;
  if (error instanceof ServiceError) {
    status = STATUS[error.kind];
    body = { message: error.message, type: errorType(error), param: error.param, code: error.code };
    // The server's own fault that a retry would meet again (a broken adapter): the SDK should not retry it.
    if (error.kind === 'server') reply.header('x-should-retry', 'false');
  } else {
    const mapped = fromFastify(error as FastifyError, maxUploadBytes);
    if (mapped) [status, body] = mapped;
    else {
      // A client that hangs up mid-request is not a server fault, and hears no answer anyway.
      if (reply.request.raw.socket?.destroyed) reply.log.info({ err: error }, 'client went away');
      else reply.log.error({ err: error }, 'request failed');
      status = 500;
      body = { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null };
    }
  }
  // The SDK retries 409 and 5xx; everything else is the request's own fault and will fail again.
  if (status < 500 && status !== 409) reply.header('x-should-retry', 'false');
  // Refused before the body was read: the rest of it is not wanted, so the connection ends with this answer.
  if (status === 413) reply.header('connection', 'close');
  return reply.code(status).send({ error: body });
}
