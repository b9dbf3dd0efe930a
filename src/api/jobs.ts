import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { createJobRequest } from '../jobs/job-request.js';
import type { JobService } from '../jobs/jobs.js';
import type { UserAction } from '../jobs/status.js';
import { listBody, pageQuery, parseWith, requireObjectBody } from './parse.js';

type JobParams = { Params: { id: string } };

const jobsPage = pageQuery({ max: 100, default: 20 });
const eventsPage = pageQuery({ max: 100, default: 20 });
const checkpointsPage = pageQuery({ max: 100, default: 10 });
const metricsQuery = z.object({
  from_step: z.coerce.number().int().min(0).default(0),
  max_points: z.coerce.number().int().min(2).max(100_000).optional(),
});
const eventsFilter = z.object({ type: z.enum(['message', 'metrics']).optional() });

export const jobsRoutes = (jobs: JobService) => async (app: FastifyInstance) => {
  app.post('/fine_tuning/jobs', async (request) =>
    jobs.create(request.org.id, parseWith(createJobRequest, requireObjectBody(request.body))),
  );

  app.get('/fine_tuning/jobs', async (request) => {
    const page = await jobs.list(request.org.id, {
      ...jobsPage(request.query),
      metadata: metadataFilter(request.query as Record<string, unknown>),
    });
    return listBody(page);
  });

  app.get<JobParams>('/fine_tuning/jobs/:id', async (request) => jobs.get(request.org.id, request.params.id));

  for (const action of ['cancel', 'pause', 'resume'] as const satisfies readonly UserAction[]) {
    app.post<JobParams>(`/fine_tuning/jobs/:id/${action}`, async (request) =>
      jobs.act(request.org.id, request.params.id, action),
    );
  }

  // Ours: the dataset doctor's report on the job's files (errors by example, tokens, cost, screening).
  app.get<JobParams>('/fine_tuning/jobs/:id/validation_report', async (request) =>
    jobs.validationReport(request.org.id, request.params.id),
  );

  // Ours: the loss curve, oldest step first; `from_step` lets a poller fetch only what is new.
  app.get<JobParams>('/fine_tuning/jobs/:id/metrics', async (request) => {
    const { from_step, max_points } = parseWith(metricsQuery, request.query);
    return { object: 'list', data: await jobs.stepMetrics(request.org.id, request.params.id, from_step, max_points) };
  });

  app.get<JobParams>('/fine_tuning/jobs/:id/events', async (request) => {
    // Ours: `type` lists one kind of event.
    const page = await jobs.listEvents(request.org.id, request.params.id, { ...eventsPage(request.query), ...parseWith(eventsFilter, request.query) });
    return listBody(page);
  });

  app.get<JobParams>('/fine_tuning/jobs/:id/checkpoints', async (request) => {
    const page = await jobs.listCheckpoints(request.org.id, request.params.id, checkpointsPage(request.query));
    return listBody(page);
  });
};

/** `metadata[key]=value` query pairs, as the SDK sends the `metadata` filter. */
function metadataFilter(query: Record<string, unknown>): Record<string, string> | undefined {
  const pairs = Object.entries(query).flatMap(([name, value]) => {
    const key = /^metadata\[(.+)\]$/.exec(name)?.[1];
    return key !== undefined && typeof value === 'string' ? [[key, value] as const] : [];
  });
  return pairs.length ? Object.fromEntries(pairs) : undefined;
}
