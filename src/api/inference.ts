import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { GenerationError } from '../engine/serve-process.js';
import { ServiceError } from '../errors.js';
import type { InferenceService } from '../inference/inference.js';
import { chatCompletionRequest, completionRequest } from '../inference/requests.js';
import { errorType } from './errors.js';
import { parseWith, requireObjectBody } from './parse.js';

export const inferenceRoutes = (inference: InferenceService) => async (app: FastifyInstance) => {
  app.post('/chat/completions', async (request, reply) => {
    const body = parseWith(chatCompletionRequest, requireObjectBody(request.body));
    return answer(request, reply, (signal) => inference.chat(request.org.id, body, signal));
  });

  app.post('/completions', async (request, reply) => {
    const body = parseWith(completionRequest, requireObjectBody(request.body));
    return answer(request, reply, (signal) => inference.complete(request.org.id, body, signal));
  });
};

/** How a stream's chunks are written as server-sent events, and what ends the stream. */
export interface EventFormat<Chunk> {
  event(chunk: Chunk): string;
  end: string;
  error(body: { message: string; type: string; param: string | null; code: string | null }): string;
}

/** Chat and legacy completions: `data: {chunk}` per chunk, `data: [DONE]` at the end. */
const completionEvents: EventFormat<unknown> = {
  event: (chunk) => `data: ${JSON.stringify(chunk)}\n\n`,
  end: 'data: [DONE]\n\n',
  // Headers are gone: the error travels as an event, which the SDK raises as an APIError.
  error: (body) => `data: ${JSON.stringify({ error: body })}\n\n`,
};

/**
 * Runs a completion that stops when the client hangs up, and answers with its object or, for a
 * stream, with server-sent events written as `format` says.
 */
export async function answer<T extends object, Chunk>(
  request: FastifyRequest,
  reply: FastifyReply,
  run: (signal: AbortSignal) => Promise<T | AsyncGenerator<Chunk>>,
  format: EventFormat<Chunk> = completionEvents,
): Promise<T | FastifyReply> {
  const hangUp = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) hangUp.abort();
  });
  // Gone while the request was authorized: nothing is generated for nobody.
  if (request.raw.socket?.destroyed) hangUp.abort();
  const result = await run(hangUp.signal);
  if (!(Symbol.asyncIterator in result)) return result;

  // The first chunk is awaited before the response begins, so a refusal still gets its status.
  const first = await result.next();
  reply.hijack();
  const out = reply.raw;
  out.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': request.id,
  });
  try {
    for (let next = first; !next.done; next = await result.next()) out.write(format.event(next.value));
    out.write(format.end);
  } catch (error) {
    if (!(error instanceof GenerationError && error.code === 'cancelled')) {
      const known = error instanceof ServiceError;
      if (!known) request.log.error({ err: error }, 'streaming a completion failed');
      const body = known
        ? { message: error.message, type: errorType(error), param: error.param, code: error.code }
        : { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null };
      out.write(format.error(body));
    }
  }
  out.end();
  return reply;
}
