import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ServiceError } from '../errors.js';
import type { OrgService } from '../orgs/orgs.js';

type KeyParams = { Params: { id: string } };

function requireOwner(request: FastifyRequest): void {
  if (request.org.keyRole !== 'owner') {
    throw new ServiceError('permission', "Only an owner key of the organization can list, revoke or rotate its API keys; this key's role is member.", {
      code: 'insufficient_permissions',
    });
  }
}

/** Ours: an organization's owner manages its API keys (list, revoke, rotate). */
export const keysRoutes = (orgs: OrgService) => async (app: FastifyInstance) => {
  app.get('/organization/api_keys', async (request) => {
    requireOwner(request);
    const data = await orgs.listKeys(request.org.id);
    return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false };
  });

  app.delete<KeyParams>('/organization/api_keys/:id', async (request) => {
    requireOwner(request);
    const revoked = await orgs.revokeKey(request.org.id, request.params.id);
    return { object: 'organization.api_key.deleted', id: revoked.id, deleted: true };
  });

  // The new key is in `value`, shown only in this answer.
  app.post<KeyParams>('/organization/api_keys/:id/rotate', async (request) => {
    requireOwner(request);
    const { key, apiKey, replaced } = await orgs.rotateKey(request.org.id, request.params.id);
    return { ...apiKey, value: key, replaces: replaced.id };
  });
};
