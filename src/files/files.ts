import { Readable } from 'node:stream';
import { startsLikeJsonLines } from '../datasets/jsonl.js';
import type { FileDeleted, FileObject as OpenAIFileObject } from 'openai/resources/files';
import { invalidRequest, noSuch } from '../errors.js';
import { newId, unixSeconds } from '../ids.js';
import { type Page, type PageRequest, mapPage, pageBySeq } from '../store/pages.js';
import type { FileTable } from '../store/schema.js';
import type { Db } from '../store/store.js';
import type { BlobStore, StagedBlob } from './blob-store.js';
import type { Selectable } from 'kysely';

/** The purposes a client may upload with (OpenAI's list); `fine-tune-results` is ours to write. */
export const UPLOAD_PURPOSES = ['fine-tune', 'assistants', 'batch', 'vision', 'user_data', 'evals'] as const;
export type Purpose = (typeof UPLOAD_PURPOSES)[number] | 'fine-tune-results';

/** An upload's bytes held aside, with its first few kilobytes to tell what it holds. */
export interface ReceivedUpload extends StagedBlob {
  readonly head: Buffer;
}

const HEAD_BYTES = 64 * 1024;

export interface NewFile {
  filename: string;
  purpose: string | undefined;
  content: ReceivedUpload;
  expiresAfterSeconds?: number | undefined;
}

type NewFileRow = Omit<Selectable<FileTable>, 'seq'>;

export class FileService {
  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
  ) {}

  private readonly storedListeners: Array<() => void> = [];

  /** Receives the bytes of an upload before its form fields are known (they may come after the file). */
  async receive(content: Readable): Promise<ReceivedUpload> {
    let head = Buffer.alloc(0);
    async function* keepingHead(source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        if (head.length < HEAD_BYTES) head = Buffer.concat([head, chunk.subarray(0, HEAD_BYTES - head.length)]);
        yield chunk;
      }
    }
    const staged = await this.blobs.stage(Readable.from(keepingHead(content)));
    return Object.assign(staged, { head });
  }

  /** Called after each upload is stored (its format check starts then). */
  onStored(listener: () => void): void {
    this.storedListeners.push(listener);
  }

  /** Stores an upload: the row is written only after the bytes are committed, and nothing is kept on a refusal. */
  async create(orgId: string, file: NewFile): Promise<FileObject> {
    try {
      const purpose = checkPurpose(file.purpose);
      if (file.content.bytes === 0) throw invalidRequest(`File '${file.filename}' is empty.`, 'file');
      if (purpose === 'fine-tune' && !startsLikeJsonLines(file.content.head)) {
        throw invalidRequest(
          `Invalid file format for Fine-Tuning API: '${file.filename}' is not JSON lines (its first line is not a JSON object; a fine-tune file has one JSON example per line).`,
          'file',
        );
      }
      const stored = await this.store(orgId, file.filename, purpose, file.content, file.expiresAfterSeconds);
      for (const listener of this.storedListeners) listener();
      return stored;
    } finally {
      await file.content.discard();
    }
  }

  /**
   * A file the server writes for an organization: a job's results. Its row is written through `db`,
   * so it can commit with the job's end; a blob whose row never commits is swept at the next start.
   */
  async createResult(orgId: string, filename: string, content: Buffer, db: Db = this.db): Promise<FileObject> {
    const staged = await this.blobs.stage(Readable.from([content]));
    try {
      return await this.store(orgId, filename, 'fine-tune-results', staged, undefined, db);
    } finally {
      await staged.discard();
    }
  }

  private async store(
    orgId: string,
    filename: string,
    purpose: Purpose,
    content: StagedBlob,
    expiresAfterSeconds: number | undefined,
    db: Db = this.db,
  ): Promise<FileObject> {
    const now = unixSeconds();
    const row: NewFileRow = {
      id: newId('file-'),
      org_id: orgId,
      filename,
      purpose,
      bytes: content.bytes,
      sha256: content.sha256,
      status: 'uploaded',
      status_details: null,
      created_at: now,
      expires_at: expiresAfterSeconds === undefined ? null : now + expiresAfterSeconds,
      deleted_at: null,
    };
    await content.commit(row.id);
    try {
      await db.insertInto('files').values(row).execute();
    } catch (error) {
      await this.blobs.remove(row.id);
      throw error;
    }
    return toFileObject(row);
  }

  async list(orgId: string, request: PageRequest & { purpose?: string | undefined }): Promise<Page<FileObject>> {
    let scope = this.visible(orgId);
    if (request.purpose !== undefined) scope = scope.where('purpose', '=', request.purpose);
    const everOwned = this.db.selectFrom('files').select(['id', 'seq']).where('org_id', '=', orgId);
    return mapPage(await pageBySeq(scope, request, everOwned), toFileObject);
  }

  async get(orgId: string, id: string, param = 'file_id'): Promise<FileObject> {
    const row = await this.visible(orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw noSuch('File', id, param);
    return toFileObject(row);
  }

  async content(orgId: string, id: string): Promise<{ file: FileObject; stream: Readable }> {
    const file = await this.get(orgId, id);
    return { file, stream: this.blobs.read(id) };
  }

  /** The bytes of a file, as the dataset doctor reads them: opened only when the reading starts. */
  async *bytes(orgId: string, id: string): AsyncGenerator<Buffer> {
    yield* (await this.content(orgId, id)).stream;
  }

  /**
   * The file once its format check has ended, or as it is after `timeoutMs`: a job created right
   * after an upload waits for the verdict (milliseconds for the guide's files) rather than racing it.
   */
  async checked(orgId: string, id: string, param: string, timeoutMs = 10_000): Promise<FileObject> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const file = await this.get(orgId, id, param);
      if (file.status !== 'uploaded' || file.purpose !== 'fine-tune' || Date.now() >= deadline) return file;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** Fine-tune uploads whose format has not been checked yet, oldest first. */
  async unchecked(): Promise<Array<{ id: string; org_id: string }>> {
    return this.db
      .selectFrom('files')
      .select(['id', 'org_id'])
      .where('purpose', '=', 'fine-tune')
      .where('status', '=', 'uploaded')
      .where('deleted_at', 'is', null)
      .orderBy('seq')
      .execute();
  }

  /** What validation found: `processed`, or `error` with the reason shown as `status_details`. */
  async setStatus(id: string, status: 'processed' | 'error', details: string | null = null): Promise<void> {
    await this.db.updateTable('files').set({ status, status_details: details }).where('id', '=', id).execute();
  }

  async delete(orgId: string, id: string): Promise<FileDeleted> {
    // Conditional on not being deleted yet, so of two racing deletes only one succeeds.
    const deleted = await this.db
      .updateTable('files')
      .set({ deleted_at: unixSeconds() })
      .where('id', '=', id)
      .where('org_id', '=', orgId)
      .where('deleted_at', 'is', null)
      .returning('id')
      .executeTakeFirst();
    if (!deleted) throw noSuch('File', id, 'file_id');
    await this.blobs.remove(id);
    return { id, object: 'file', deleted: true };
  }

  async deleteExpired(now = unixSeconds()): Promise<void> {
    const expired = await this.db
      .updateTable('files')
      .set({ deleted_at: now })
      .where('deleted_at', 'is', null)
      .where('expires_at', '<=', now)
      .returning('id')
      .execute();
    for (const { id } of expired) await this.blobs.remove(id);
  }

  /** On start: drop half-received uploads and any blob no live row names. */
  async sweep(): Promise<void> {
    const rows = await this.db.selectFrom('files').select('id').where('deleted_at', 'is', null).execute();
    await this.blobs.sweep(new Set(rows.map((r) => r.id)));
    await this.deleteExpired();
  }

  private visible(orgId: string) {
    return this.db
      .selectFrom('files')
      .selectAll()
      .where('org_id', '=', orgId)
      .where('deleted_at', 'is', null)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', unixSeconds())]));
  }
}

function checkPurpose(purpose: string | undefined): Purpose {
  if (purpose === undefined || purpose === '') throw invalidRequest("Missing required parameter: 'purpose'.", 'purpose');
  if (!(UPLOAD_PURPOSES as readonly string[]).includes(purpose)) {
    throw invalidRequest(
      `Invalid value for 'purpose': '${purpose}'. Supported values are: ${UPLOAD_PURPOSES.map((p) => `'${p}'`).join(', ')}.`,
      'purpose',
      'invalid_value',
    );
  }
  return purpose as Purpose;
}

/** OpenAI's file object; the spec writes absent details and expiry as null, where the SDK's type says optional. */
export type FileObject = Omit<OpenAIFileObject, 'status_details' | 'expires_at'> & {
  status_details: string | null;
  expires_at: number | null;
};

function toFileObject(row: NewFileRow): FileObject {
  return {
    id: row.id,
    object: 'file',
    bytes: row.bytes,
    created_at: row.created_at,
    filename: row.filename,
    purpose: row.purpose as FileObject['purpose'],
    status: row.status,
    status_details: row.status_details,
    expires_at: row.expires_at,
  };
}
