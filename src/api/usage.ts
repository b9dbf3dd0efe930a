import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { MONTH, type UsageService } from '../usage/usage.js';
import { parseWith } from './parse.js';

const usageQuery = z.object({ month: z.string().regex(MONTH, 'must be a month written YYYY-MM').optional() });

/** Ours: the caller's organization's training and inference usage per month. */
export const usageRoutes = (usage: UsageService) => async (app: FastifyInstance) => {
  app.get('/usage', async (request) => {
    const { month } = parseWith(usageQuery, request.query);
    return { object: 'list', data: await usage.monthly(request.org.id, month) };
  });
};
