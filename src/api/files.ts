import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { FileReports } from '../datasets/file-reports.js';
import type { FileService, ReceivedUpload } from '../files/files.js';
import { ServiceError, invalidRequest } from '../errors.js';
import { listBody, pageQuery, parseWith, refuseForbiddenName } from './parse.js';

const expiresAfter = z.object({
  anchor: z.literal('created_at', "expires_after[anchor] must be 'created_at'"),
  seconds: z.coerce.number().int().min(3600).max(2592000),
});

/** Rendered examples a report may carry: enough to see the masking, not a copy of the file. */
const MAX_SHOWN_EXAMPLES = 20;

const filesPage = pageQuery({ max: 10000, default: 10000, ordered: true });
const purposeFilter = z.object({ purpose: z.string().optional() });
const reportQuery = z.object({
  model: z.string().min(1).optional(),
  show: z.coerce.number().int().min(0).max(MAX_SHOWN_EXAMPLES).default(0),
});
/** Room for the form's own bytes around the file: boundaries, part headers, the purpose field. */
const FORM_OVERHEAD_BYTES = 64 * 1024;

export const filesRoutes = (files: FileService, reports: FileReports, maxUploadBytes: number) => async (app: FastifyInstance) => {
  app.post('/files', async (request) => {
    if (!request.isMultipart()) {
      throw invalidRequest(
        "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
        'file',
        'unsupported_content_type',
      );
    }
    // Refused before reading when the declared body is past the limit by more than a form's fields could take.
    const declared = Number(request.headers['content-length']);
    if (declared > maxUploadBytes + FORM_OVERHEAD_BYTES) {
      throw new ServiceError('too_large', `The file is larger than this server accepts (${maxUploadBytes} bytes).`, {
        param: 'file',
        code: 'file_too_large',
      });
    }
    const form = await readUploadForm(request, files);
    try {
      const { fields } = form;
      const hasExpiry = 'expires_after[anchor]' in fields || 'expires_after[seconds]' in fields;
      const expiry = hasExpiry
        ? parseWith(expiresAfter, { anchor: fields['expires_after[anchor]'], seconds: fields['expires_after[seconds]'] })
        : undefined;
      return await files.create(request.org.id, {
        filename: form.filename,
        purpose: fields.purpose,
        content: form.staged,
        expiresAfterSeconds: expiry?.seconds,
      });
    } finally {
      await form.staged.discard();
    }
  });

  app.get('/files', async (request) => {
    const page = await files.list(request.org.id, {
      ...filesPage(request.query),
      ...parseWith(purposeFilter, request.query),
    });
    return listBody(page);
  });

  app.get<{ Params: { id: string } }>('/files/:id', async (request) => files.get(request.org.id, request.params.id));

  app.get<{ Params: { id: string } }>('/files/:id/content', async (request, reply) => {
    const { file, stream } = await files.content(request.org.id, request.params.id);
    return reply
      .type('application/octet-stream')
      .header('content-length', file.bytes)
      .header('content-disposition', `attachment; filename="${encodeURIComponent(file.filename)}"`)
      .send(stream);
  });

  app.delete<{ Params: { id: string } }>('/files/:id', async (request) => files.delete(request.org.id, request.params.id));

  // Ours: the dataset doctor's report on a fine-tune file, counted with a base model, before any job.
  app.get<{ Params: { id: string } }>('/files/:id/report', async (request, reply) => {
    const query = parseWith(reportQuery, request.query);
    // A large file takes a while to read: a client that gave up stops the reading.
    const abort = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    return reports.report(request.org.id, request.params.id, { model: query.model ?? null, show: query.show, signal: abort.signal });
  });
};

/**
 * Reads the form as it arrives: the file goes to staging at once, since the SDK may send it
 * before the purpose field.
 */
async function readUploadForm(request: FastifyRequest, files: FileService) {
  let staged: ReceivedUpload | undefined;
  let filename = '';
  const fields: Record<string, string> = {};
  try {
    for await (const part of request.parts()) {
      if (part.type === 'field') {
        refuseForbiddenName(part.fieldname);
        fields[part.fieldname] = String(part.value);
        continue;
      }
      if (part.fieldname !== 'file') {
        part.file.resume();
        throw invalidRequest(`Unexpected file field '${part.fieldname}': send the file as the field 'file'.`, 'file');
      }
      filename = part.filename;
      staged = await files.receive(part.file);
    }
    if (!staged) throw invalidRequest("Missing required parameter: 'file'.", 'file');
    return { staged, filename, fields };
  } catch (error) {
    await staged?.discard();
    // busboy reports a malformed form as a plain Error, with neither the `code` of a system error
    // (a full disk or a dropped connection) nor the status Fastify's errors and ours carry.
    if (error instanceof Error && !('code' in error) && !('statusCode' in error)) {
      throw invalidRequest(`The multipart form could not be read: ${error.message}`, 'file');
    }
    throw error;
  }
}
