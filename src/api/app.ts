import multipart from '@fastify/multipart';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { ServiceError, invalidRequest } from '../errors.js';
import type { FileReports } from '../datasets/file-reports.js';
import type { FileService } from '../files/files.js';
import { newId } from '../ids.js';
import type { InferenceService } from '../inference/inference.js';
import type { JobService } from '../jobs/jobs.js';
import type { ModelPullService } from '../models/model-pulls.js';
import type { ModelService } from '../models/models.js';
import type { NotificationService } from '../notifications/notifications.js';
import type { Administrators, Caller, OrgService } from '../orgs/orgs.js';
import type { ResponseService } from '../responses/responses.js';
import type { UsageService } from '../usage/usage.js';
import type { DiskSpace } from '../files/disk.js';
import { sendClientError, sendError } from './errors.js';
import { filesRoutes } from './files.js';
import type { ExportService } from '../export/exports.js';
import { exportsRoutes } from './exports.js';
import { inferenceRoutes } from './inference.js';
import { responsesRoutes } from './responses.js';
import { jobsRoutes } from './jobs.js';
import { keysRoutes } from './keys.js';
import { organizationRoutes } from './organization.js';
import { loggedUrl, safeLogger } from './logging.js';
import { refuseForbiddenKeys, refuseForbiddenQueryKeys } from './parse.js';
import { modelPullRoutes } from './model-pulls.js';
import { workersRoutes } from './workers.js';
import type { WorkerRegistry } from '../jobs/workers.js';
import { modelsRoutes } from './models.js';
import { uiRoutes } from './ui.js';
import { usageRoutes } from './usage.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The organization the request's API key belongs to, and the key; set before any /v1 handler runs. */
    org: Caller;
  }
}

export interface Services {
  orgs: OrgService;
  files: FileService;
  fileReports: FileReports;
  models: ModelService;
  pulls: ModelPullService;
  jobs: JobService;
  notifications: NotificationService;
  usage: UsageService;
  inference: InferenceService;
  responses: ResponseService;
  exports: ExportService;
  workers: WorkerRegistry;
  /** Organizations that administer the server (config.json's models.pull_organizations). */
  administrators: Administrators;
}

export interface ApiOptions {
  maxUploadBytes: number;
  /** The home folder's disk, named when it is full. */
  disk: DiskSpace;
  logger: FastifyServerOptions['logger'];
}

export function buildApi(services: Services, options: ApiOptions): FastifyInstance {
  const app = Fastify({
    logger: safeLogger(options.logger),
    genReqId: () => newId('req_'),
    // ft: model ids are long and full of colons; the default 100-character limit on a path parameter is too short.
    routerOptions: { maxParamLength: 500 },
    // A client refused mid-upload may still be sending; on shutdown such sockets are cut, not waited for.
    forceCloseConnections: true,
    frameworkErrors: (error, _request, reply) => sendError(reply, error, options),
    clientErrorHandler: sendClientError,
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // POST /cancel, /pause and /resume come with no body at all; an empty JSON body means "no arguments".
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    if (body === '') return done(null, undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body as string);
    } catch (error) {
      return done(invalidRequest(`We could not parse the JSON body of your request: ${(error as Error).message}`), undefined);
    }
    try {
      refuseForbiddenKeys(parsed);
    } catch (error) {
      return done(error as Error, undefined);
    }
    done(null, parsed);
  });
  app.addHook('preValidation', async (request) => refuseForbiddenQueryKeys(request.query));

  app.register(multipart, {
    limits: { fileSize: options.maxUploadBytes, files: 1, fields: 8, parts: 10 },
    // Larger buffers between the socket, the parser and the disk: fewer hand-offs per 100 MB upload.
    highWaterMark: 256 * 1024,
    fileHwm: 256 * 1024,
  });

  app.setErrorHandler((error, _request, reply) => sendError(reply, error, options));
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ServiceError('not_found', `Invalid URL (${request.method} ${loggedUrl(request.url)})`), options),
  );

  app.register(
    async (v1) => {
      v1.decorateRequest('org', undefined as unknown as Caller);
      v1.addHook('onRequest', async (request) => {
        const header = request.headers.authorization;
        const key = header?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
        if (!key) {
          throw new ServiceError(
            'authentication',
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
          );
        }
        request.org = await services.orgs.authenticate(key);
      });
      v1.register(filesRoutes(services.files, services.fileReports, options.maxUploadBytes));
      v1.register(modelsRoutes(services.models));
      v1.register(modelPullRoutes(services.pulls));
      v1.register(jobsRoutes(services.jobs));
      v1.register(usageRoutes(services.usage));
      v1.register(inferenceRoutes(services.inference));
      v1.register(keysRoutes(services.orgs));
      v1.register(organizationRoutes(services.administrators));
      v1.register(responsesRoutes(services.responses));
      v1.register(exportsRoutes(services.exports));
      v1.register(workersRoutes(services.workers, services.administrators));
    },
    { prefix: '/v1' },
  );
  app.register(uiRoutes());

  return app;
}
