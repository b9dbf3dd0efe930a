import type { FastifyInstance } from 'fastify';
import type { WorkerRegistry } from '../jobs/workers.js';
import type { Administrators } from '../orgs/orgs.js';

/**
 * Ours: the processes that train jobs (the server's runner and `tunelab worker` on other hosts),
 * what they can hold, and the jobs they hold leases on. They span organizations, so only an
 * administrator's key sees them: the organizations that may add base models (config.json's
 * models.pull_organizations, "personal" by default).
 */
export const workersRoutes = (workers: WorkerRegistry, administrators: Administrators) => async (app: FastifyInstance) => {
  app.get('/workers', async (request) => {
    administrators.require(request.org, "list workers: they train every organization's jobs");
    return { object: 'list', data: await workers.list() };
  });
};
