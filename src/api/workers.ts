import type { FastifyInstance } from 'fastify';
import { ServiceError } from '../errors.js';
import type { WorkerRegistry } from '../jobs/workers.js';

/**
 * Ours: the processes that train jobs (the server's runner and `tunelab worker` on other hosts),
 * what they can hold, and the jobs they hold leases on. They span organizations, so only an
 * administrator's key sees them: the organizations that may add base models (config.json's
 * models.pull_organizations, "personal" by default).
 */
export const workersRoutes = (workers: WorkerRegistry, administrators: readonly string[]) => async (app: FastifyInstance) => {
  app.get('/workers', async (request) => {
    if (!administrators.includes(request.org.name)) {
      throw new ServiceError(
        'permission',
        `Organization "${request.org.name}" may not list workers: they train every organization's jobs. The administrator lists those that may in config.json (models.pull_organizations).`,
      );
    }
    return { object: 'list', data: await workers.list() };
  });
};
