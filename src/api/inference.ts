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

/**
 * Runs a completion that stops when the client hangs up, and answers with its object or, for a
 * stream, with server-sent events: `data: {chunk}` per chunk and `data: [DONE]` at the end.
 */
async function answer<T extends object, Chunk>(
  request: FastifyRequest,
  reply: FastifyReply,
  run: (signal: AbortSignal) => Promise<T | AsyncGenerator<Chunk>>,
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
    for (let next = first; !next.done; next = await result.next()) out.write(`data: ${JSON.stringify(next.value)}\n\n`);
    out.write('data: [DONE]\n\n');
  } catch (error) {
    if (!(error instanceof GenerationError && error.code === 'cancelled')) {
      // Headers are gone: the error travels as an event, which the SDK raises as an APIError.
      const known = error instanceof ServiceError;
      if (!known) request.log.error({ err: error }, 'streaming a completion failed');
      const body = known
        ? { message: error.message, type: errorType(error), param: error.param, code: error.code }
        : { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null };
      out.write(`data: ${JSON.stringify({ error: body })}\n\n`);
    }
  }
  out.end();
  return reply;
}
