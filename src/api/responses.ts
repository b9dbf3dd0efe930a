import type { FastifyInstance } from 'fastify';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import { z } from 'zod';
import { responseCreateRequest } from '../responses/requests.js';
import type { ResponseService } from '../responses/responses.js';
import { type EventFormat, answer } from './inference.js';
import { parseWith, requireObjectBody } from './parse.js';

const idParams = z.object({ id: z.string().min(1) });

/** Responses stream as named events (`event: response.output_text.delta`), with no `[DONE]`. */
const responseEvents: EventFormat<ResponseStreamEvent> = {
  event: (event) => `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`,
  end: '',
  error: (body) => `event: error\ndata: ${JSON.stringify({ type: 'error', code: body.code, message: body.message, param: body.param, sequence_number: 0 })}\n\n`,
};

export const responsesRoutes = (responses: ResponseService) => async (app: FastifyInstance) => {
  app.post('/responses', async (request, reply) => {
    const body = parseWith(responseCreateRequest, requireObjectBody(request.body));
    return answer(request, reply, (signal) => responses.create(request.org.id, body, signal), responseEvents);
  });

  app.get('/responses/:id', async (request) => responses.get(request.org.id, parseWith(idParams, request.params).id));

  app.delete('/responses/:id', async (request) => responses.delete(request.org.id, parseWith(idParams, request.params).id));
};
