import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { badUserInput } from '@tributary/core/graphql';
import { publish } from '@tributary/core/events';
import { queryRows, queryRun } from '@tributary/core/db';
import { idempotencyScope, idempotent, requestHash } from '@tributary/core/idempotency';
import type { SubgraphContext } from '@tributary/core/service';
import { GraphQLError } from 'graphql';
import type { DocumentsConfig } from './config.ts';
import { Document, type JobPriority } from './entities.ts';
import { CONTENT_TYPES, extractText, normalizeContentType, type ContentType } from './text.ts';
import { readFileOf, toFile, type FileRow, type FileView } from './views.ts';

export interface UploadInput {
  title: string;
  content?: string | null;
  contentType?: string | null;
  /** The reference POST /uploads answered with (the gateway puts it where the multipart map said). */
  file?: string | null;
  /** Absent: NORMAL (the schema's default); an explicit null is taken as the default too. */
  priority?: JobPriority | null;
}

/** An upload's input once checked: its text, or the reference of a file staged by POST /uploads. */
type CheckedUpload = { title: string; priority: JobPriority } & (
  | { kind: 'text'; content: string; text: string; contentType: ContentType; requestedContentType: string | null }
  | { kind: 'file'; ref: string }
);

/** A staged file, with the text read from it when it arrived. */
type StagedFileRow = FileRow & { text: string };

/** The ids and time of a new document, chosen before its transaction. */
interface NewIds {
  id: string;
  jobId: string;
  now: Date;
}

/** What an upload commits (or, for a retried Idempotency-Key, what the first attempt did). */
export interface Uploaded {
  doc: Document;
  file: FileView | null;
}

/** The input's rules, in the order clients have always been told of them (BAD_USER_INPUT with its field). */
function checkUpload(input: UploadInput, config: DocumentsConfig): CheckedUpload {
  const title = input.title.trim();
  if (title.length === 0) throw badUserInput('title must not be empty', 'title');
  if (title.length > config.DOCUMENT_MAX_TITLE_LENGTH) throw badUserInput(`title must be at most ${config.DOCUMENT_MAX_TITLE_LENGTH} characters`, 'title');
  const hasContent = input.content !== null && input.content !== undefined;
  const hasFile = input.file !== null && input.file !== undefined;
  if (hasContent === hasFile) throw badUserInput('give exactly one of content and file', hasContent ? 'file' : 'content');
  const priority: JobPriority = input.priority ?? 'NORMAL';
  if (hasFile) {
    if (input.contentType) throw badUserInput("a file's type is read from its bytes: leave contentType out", 'contentType');
    return { kind: 'file', title, priority, ref: input.file! };
  }
  const content = input.content!;
  if (content.trim().length === 0) throw badUserInput('content must not be empty', 'content');
  const bytes = Buffer.byteLength(content, 'utf8');
  if (bytes > config.DOCUMENT_MAX_BYTES) throw badUserInput(`content is ${bytes} bytes; the limit is ${config.DOCUMENT_MAX_BYTES}`, 'content');
  const contentType = normalizeContentType(input.contentType);
  if (!contentType) throw badUserInput(`contentType must be one of ${CONTENT_TYPES.join(', ')}`, 'contentType');
  const text = extractText(content, contentType);
  if (text.length === 0) throw badUserInput('content has no text once its markup is removed', 'content');
  return { kind: 'text', title, priority, content, text, contentType, requestedContentType: input.contentType ?? null };
}

/** The tenant's unclaimed staged file by its reference, locked until the transaction ends. */
async function lockStagedFile(tx: SubgraphContext['em'], ref: string, tenantId: string): Promise<StagedFileRow> {
  const [staged] = await queryRows<StagedFileRow>(
    tx,
    'select id, name, content_type, size, sha256, text from files where id = ? and tenant_id = ? and document_id is null for update',
    [ref, tenantId],
  );
  if (!staged) throw badUserInput('no uploaded file has this reference (send the file in a multipart request)', 'file');
  return staged;
}

/**
 * The document, its file's claim and its `document.uploaded` event (outbox), in the caller's
 * transaction. A file is claimed here, not before: a retry answered from its Idempotency-Key
 * leaves its own staged file unclaimed, to be swept.
 */
async function createDocument(tx: SubgraphContext['em'], ctx: SubgraphContext, upload: CheckedUpload, staged: StagedFileRow | undefined, ids: NewIds): Promise<Uploaded> {
  const { id, jobId, now } = ids;
  const { title, priority } = upload;
  let content = '';
  let text = '';
  let contentType = '';
  let eventType: ContentType = 'text/plain';
  let file: FileView | null = null;
  if (staged) {
    // Its text lives on in the document; the file keeps its bytes.
    await queryRun(tx, "update files set document_id = ?, text = '' where id = ?", [id, staged.id]);
    content = text = staged.text;
    contentType = staged.content_type;
    file = toFile(staged);
  } else if (upload.kind === 'text') {
    ({ content, text } = upload);
    contentType = eventType = upload.contentType;
  }
  const doc = tx.create(Document, {
    id,
    tenantId: ctx.tenantId,
    title,
    content,
    text,
    contentType,
    size: Buffer.byteLength(content, 'utf8'),
    jobId,
    priority,
    uploadedBy: ctx.userId,
    createdAt: now,
  });
  tx.persist(doc);
  await publish(tx, 'documents', [
    {
      type: 'document.uploaded',
      subject: id,
      tenantId: ctx.tenantId,
      data: {
        documentId: id,
        jobId,
        title,
        text,
        // The event's contract knows text types only; a file's text is plain text.
        contentType: eventType,
        ...(ctx.userId ? { uploadedBy: ctx.userId } : {}),
        uploadedAt: now.toISOString(),
        priority,
      },
    },
  ]);
  return { doc, file };
}

/**
 * What the request asks for, as an Idempotency-Key's retry must repeat it: a file by its bytes'
 * hash, name and type (each attempt stages it anew under a new reference). The priority only when
 * it is not the default, so a key stored before priorities existed still matches its retry.
 */
function uploadRequestHash(upload: CheckedUpload, staged: StagedFileRow | undefined): string {
  const { title, priority } = upload;
  return requestHash({
    ...(staged
      ? { title, file: { sha256: staged.sha256, name: staged.name, contentType: staged.content_type } }
      : { title, content: upload.kind === 'text' ? upload.content : '', contentType: upload.kind === 'text' ? upload.requestedContentType : null }),
    ...(priority === 'NORMAL' ? {} : { priority }),
  });
}

/** The first attempt's document and file, for a retry of its Idempotency-Key. */
async function firstAttempt(tx: SubgraphContext['em'], documentId: string, tenantId: string): Promise<Uploaded> {
  const doc = await tx.findOne(Document, { id: documentId, tenantId });
  if (!doc) throw new GraphQLError('the document of this Idempotency-Key is gone', { extensions: { code: 'NOT_FOUND' } });
  return { doc, file: await readFileOf(tx, doc.id, tenantId) };
}

/**
 * `uploadDocument`: check the input, then create the document in one transaction with its file's
 * claim, its event and its idempotency key (transactional outbox): all of them or none.
 */
export async function uploadDocument(ctx: SubgraphContext, input: UploadInput, config: DocumentsConfig): Promise<Uploaded> {
  const upload = checkUpload(input, config);
  // With an Idempotency-Key, a retry of the same upload by the same user gets the first
  // answer (same document, same job), with no second document or event (no second analysis).
  const key = ctx.idempotencyKey;
  const scope = key !== undefined ? idempotencyScope(ctx.tenantId, ctx.userId, 'uploadDocument') : undefined;
  const now = new Date();
  // A version 7 id carries its creation time: the job view can state a job it has not
  // heard of yet (QUEUED since its upload) without asking anyone.
  const ids: NewIds = { id: randomUUID(), jobId: uuidv7({ msecs: now.getTime() }), now };
  return ctx.em.transactional(async (tx) => {
    const staged = upload.kind === 'file' ? await lockStagedFile(tx, upload.ref, ctx.tenantId) : undefined;
    if (key === undefined || scope === undefined) return createDocument(tx, ctx, upload, staged, ids);
    let created: Uploaded | undefined;
    const outcome = await idempotent(tx, { scope, key, requestHash: uploadRequestHash(upload, staged), ttlHours: config.IDEMPOTENCY_KEY_TTL_HOURS }, async () => {
      created = await createDocument(tx, ctx, upload, staged, ids);
      return { documentId: created.doc.id };
    });
    // The first attempt's document; this attempt's staged file (if any) stays unclaimed and is swept.
    return created ?? firstAttempt(tx, outcome.response.documentId, ctx.tenantId);
  });
}
