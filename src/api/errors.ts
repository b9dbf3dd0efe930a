import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply } from 'fastify';
import { type ErrorKind, ServiceError } from '../errors.js';
import { type DiskSpace, isDiskFull } from '../files/disk.js';

/** What the error answers need to know of the server. */
export interface ErrorContext {
  maxUploadBytes: number;
  disk: DiskSpace;
}

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
    case 'FST_PROTO_VIOLATION':
      // The multipart plugin refuses the field before its name reaches us.
      return [
        400,
        body("A form field is named after a property every object has ('__proto__', 'constructor', 'toString', ...): such names cannot be used.", null, 'invalid_key'),
      ];
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

export function sendError(reply: FastifyReply, error: unknown, context: ErrorContext): FastifyReply {
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
    const mapped = fromFastify(error as FastifyError, context.maxUploadBytes);
    if (mapped) [status, body] = mapped;
    else if (isDiskFull(error)) {
      // 507: nothing was kept, and a retry meets the same full disk until a person frees space.
      reply.log.error({ err: error }, 'the disk is full');
      status = 507;
      body = {
        message: `${context.disk.fullMessage('storing what this request sent')}. Nothing was kept; try again once space is freed.`,
        type: 'server_error',
        param: null,
        code: 'insufficient_storage',
      };
      reply.header('x-should-retry', 'false');
    } else {
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

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (a request line and headers over
 * 16 KB, a malformed request, a client too slow to send its headers), answered in OpenAI's shape.
 */
export function sendClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message, code] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'The URL and headers of the request are larger than this server accepts (16 KB): send long values in the body.', 'request_header_fields_too_large']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'The request took too long to arrive.', 'request_timeout']
        : [400, `The request is not valid HTTP: ${error.message}`, 'invalid_http'];
  const body = JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `x-should-retry: false\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}
