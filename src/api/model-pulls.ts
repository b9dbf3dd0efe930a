import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ModelPullService } from '../models/model-pulls.js';
import { parseWith } from './parse.js';

const pullBody = z.strictObject({
  repo: z.string().min(1, 'must be a Hugging Face model id, owner/name or owner/name@revision'),
  name: z.string().min(1).optional(),
});

/**
 * Ours: an administrator's key pulls a base model from the Hugging Face Hub into the server
 * (`POST /v1/models/pulls`), then follows it (`GET /v1/models/pulls/{id}`) until it has
 * succeeded (the model is registered) or failed (with the reason).
 */
export const modelPullRoutes = (pulls: ModelPullService) => async (app: FastifyInstance) => {
  app.get('/models/pulls', async (request) => ({ object: 'list', data: pulls.list(request.org) }));

  app.post('/models/pulls', async (request) => {
    const body = parseWith(pullBody, request.body ?? {});
    return pulls.start(request.org, body.repo, body.name);
  });

  app.get<{ Params: { id: string } }>('/models/pulls/:id', async (request) => pulls.get(request.org, request.params.id));
};
