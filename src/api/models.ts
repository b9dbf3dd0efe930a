import type { FastifyInstance } from 'fastify';
import type { ModelService } from '../models/models.js';

export const modelsRoutes = (models: ModelService) => async (app: FastifyInstance) => {
  app.get('/models', async (request) => ({ object: 'list', data: await models.list(request.org.id) }));

  app.get<{ Params: { model: string } }>('/models/:model', async (request) =>
    models.retrieve(request.org.id, request.params.model),
  );

  app.delete<{ Params: { model: string } }>('/models/:model', async (request) =>
    models.delete(request.org.id, request.params.model),
  );
};
