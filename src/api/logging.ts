import type { FastifyRequest, FastifyServerOptions } from 'fastify';

/** Our ids ("file-...", "ftjob-...", "key_...", fine-tune names): long, but nothing secret. */
const ID_PREFIX = /^(file-|ftjob-|ftevent-|ftckpt_|org-|key_|req_|chatcmpl-|cmpl-|whep_|ft:)/;
/** An API key ("sk-..."), or a long run of key-like characters that is none of our ids. */
const looksLikeKey = (segment: string) =>
  /^sk-/i.test(segment) || (/^[A-Za-z0-9_\-.~+/=%]{32,}$/.test(segment) && !ID_PREFIX.test(segment));

/**
 * A URL as it may be logged: no query string (a client may put `?api_key=...` there) and no path
 * segment that looks like a key. Logs are read by more people than keys are meant for.
 */
export function loggedUrl(url: string): string {
  const [path = '', query] = url.split('?', 2);
  const segments = path.split('/').map((segment) => (looksLikeKey(decodeSegment(segment)) ? '[redacted]' : segment));
  return segments.join('/') + (query === undefined ? '' : '?[query omitted]');
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** The server's logger options with a request serializer that logs `loggedUrl`, not the URL as sent. */
export function safeLogger(logger: FastifyServerOptions['logger']): FastifyServerOptions['logger'] {
  if (!logger) return logger;
  const base = logger === true ? {} : logger;
  return {
    ...base,
    serializers: {
      ...base.serializers,
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: loggedUrl(request.url),
        host: request.host,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  };
}
