import type { FastifyInstance } from 'fastify';
import type { Administrators, OrganizationInfo } from '../orgs/orgs.js';

/**
 * Ours: the caller's organization, its key's role, and whether it administers the server (the
 * organizations in config.json's models.pull_organizations). The dashboard reads it to offer only
 * what the key may use; the routes that need a role still check it themselves.
 */
export const organizationRoutes = (administrators: Administrators) => async (app: FastifyInstance) => {
  app.get('/organization', async (request): Promise<OrganizationInfo> => ({
    object: 'organization',
    id: request.org.id,
    name: request.org.name,
    key_role: request.org.keyRole,
    administrator: administrators.includes(request.org),
  }));
};
