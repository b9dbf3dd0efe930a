import fs from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { EXPORT_FORMATS, type ExportService, GGUF_QUANTIZATIONS } from '../export/exports.js';
import { parseWith, requireObjectBody } from './parse.js';

const createExport = z.strictObject({
  model: z.string().min(1),
  format: z.enum(EXPORT_FORMATS),
  quantization: z.enum(GGUF_QUANTIZATIONS).optional(),
});

/** Ours: exports of a fine-tune (peft, merged, gguf), made in the background and downloaded as a .tar.gz; each organization sees its own. */
export const exportsRoutes = (exports: ExportService) => async (app: FastifyInstance) => {
  app.post('/exports', async (request) => exports.create(request.org.id, parseWith(createExport, requireObjectBody(request.body))));

  app.get('/exports', async (request) => {
    const data = await exports.list(request.org.id);
    return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false };
  });

  app.get<{ Params: { id: string } }>('/exports/:id', async (request) => exports.get(request.org.id, request.params.id));

  app.get<{ Params: { id: string } }>('/exports/:id/content', async (request, reply) => {
    const archive = await exports.archive(request.org.id, request.params.id);
    return reply
      .type('application/gzip')
      .header('content-length', archive.bytes)
      .header('content-disposition', `attachment; filename="${encodeURIComponent(archive.filename)}"`)
      .send(fs.createReadStream(archive.path));
  });

  app.delete<{ Params: { id: string } }>('/exports/:id', async (request) => exports.delete(request.org.id, request.params.id));
};
