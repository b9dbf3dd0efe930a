import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { ServiceError } from '../errors.js';

/** Vite's output: the same place from src/api (tests, tsx) and from dist/api (the package). */
export const UI_DIR = fileURLToPath(new URL('../../dist/ui', import.meta.url));

/**
 * The browser may load and call this server only: the dashboard's data stays on it. Inline styles
 * are allowed because uPlot sizes its canvas with them.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "form-action 'none'",
].join('; ');

/**
 * The dashboard at /ui/: static files only. It signs in with an API key and reads everything
 * through /v1 like any other client, so nothing here needs authorization.
 */
export const uiRoutes = (root = UI_DIR) => async (app: FastifyInstance) => {
  // Relative redirects, so a proxy that serves the server under a prefix keeps it.
  app.get('/', (_request, reply) => reply.redirect('ui/'));
  app.get('/ui', (_request, reply) => reply.redirect('ui/'));
  if (!fs.existsSync(`${root}/index.html`)) {
    app.get('/ui/*', async () => {
      throw new ServiceError('not_found', 'The dashboard is not built: run `npm run build` in the tunelab folder.');
    });
    return;
  }
  await app.register(fastifyStatic, {
    root,
    prefix: '/ui/',
    setHeaders: (response, filePath) => {
      // File names under assets/ carry a hash of their content; index.html must be asked for every time.
      response.setHeader('cache-control', filePath.includes('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache');
      response.setHeader('content-security-policy', CONTENT_SECURITY_POLICY);
      response.setHeader('x-content-type-options', 'nosniff');
    },
  });
};
