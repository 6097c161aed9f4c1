import { randomUUID } from 'node:crypto';
import { v7 as uuidv7, validate as isUuid } from 'uuid';
import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import { publish } from '@tributary/core/events';
import { queryRows, queryRun } from '@tributary/core/db';
import { idempotencyScope, idempotent, requestHash } from '@tributary/core/idempotency';
import { subgraphConfigSchema, type ServiceDefinition, type SubgraphContext } from '@tributary/core/service';
import { GraphQLError, GraphQLScalarType } from 'graphql';
import { z } from 'zod';
import { Document, migrations, type JobPriority } from './entities.ts';
import { uploadRoutes } from './uploads.ts';
import { typeDefs } from './schema.ts';
import { CONTENT_TYPES, extractText, normalizeContentType, type ContentType } from './text.ts';

export const configSchema = subgraphConfigSchema.extend({
  /** Largest accepted document content, in bytes (UTF-8). Default 1 MiB. */
  DOCUMENT_MAX_BYTES: z.coerce.number().int().positive().default(1024 * 1024),
  /** Longest accepted title, in characters. Default 500. */
  DOCUMENT_MAX_TITLE_LENGTH: z.coerce.number().int().positive().default(500),
  /** Largest accepted file (`uploadDocument(input: { file })`), in bytes. Default 25 MiB. */
  DOCUMENT_MAX_FILE_BYTES: z.coerce.number().int().positive().default(25 * 1024 * 1024),
});
export type DocumentsConfig = z.infer<typeof configSchema>;

interface UploadInput {
  title: string;
  content?: string | null;
  contentType?: string | null;
  /** The reference POST /uploads answered with (the gateway puts it where the multipart map said). */
  file?: string | null;
  /** Absent: NORMAL (the schema's default); an explicit null is taken as the default too. */
  priority?: JobPriority | null;
}

/** The Upload scalar: what reaches a resolver is a staged file's reference. */
const Upload = new GraphQLScalarType({
  name: 'Upload',
  description: 'A file sent in a multipart request; a resolver sees its reference.',
  serialize: () => {
    throw new GraphQLError('Upload is an input type');
  },
  parseValue: (value) => {
    if (typeof value === 'string' && isUuid(value)) return value;
    throw badUserInput('file must be sent as a part of a multipart request (the GraphQL multipart request spec)', 'file');
  },
  parseLiteral: () => {
    throw badUserInput('file must be sent as a part of a multipart request (the GraphQL multipart request spec)', 'file');
  },
});

/** Where the gateway serves a document's file. */
const downloadUrl = (fileId: string) => `/files/${fileId}`;

interface FileRow {
  id: string;
  name: string;
  content_type: string;
  size: number | string;
  sha256: string;
}
const toFile = (row: FileRow) => ({ name: row.name, contentType: row.content_type, size: Number(row.size), sha256: row.sha256, downloadUrl: downloadUrl(row.id) });

interface DocumentRow {
  id: string;
  title: string;
  content_type: string;
  size: number;
  job_id: string;
  priority: JobPriority;
  created_at: Date | string;
}

/**
 * One document of a tenant by its id or its job's, as GraphQL shows it. A plain statement: these
 * lookups run for every federated read of a job or document (each subscription message), where
 * the ORM's query building and hydration cost several times the query itself. The content (up to
 * `DOCUMENT_MAX_BYTES`) is left out: `Document.content` reads it when a client asks for it.
 */
async function readDocument(em: SubgraphContext['em'], by: 'id' | 'job_id', id: string, tenantId: string) {
  if (!isUuid(id)) return null;
  const [row] = await queryRows<DocumentRow>(em, `select id, title, content_type, size, job_id, priority, created_at from documents where ${by} = ? and tenant_id = ?`, [id, tenantId]);
  return row
    ? { id: row.id, title: row.title, contentType: row.content_type, size: row.size, createdAt: new Date(row.created_at).toISOString(), jobId: row.job_id, jobPriority: row.priority }
    : null;
}

function toGraphQL(doc: Document) {
  return {
    id: doc.id,
    title: doc.title,
    content: doc.content,
    contentType: doc.contentType,
    size: doc.size,
    createdAt: doc.createdAt.toISOString(),
    jobId: doc.jobId,
    jobPriority: doc.priority,
  };
}

/** The job a document row stands for, as far as this service knows it (its existence, document and priority). */
const jobOf = (doc: { jobId: string; jobPriority: JobPriority }) => ({ id: doc.jobId, priority: doc.jobPriority, document: doc });

export const documentsService: ServiceDefinition<DocumentsConfig> = {
  name: 'documents',
  typeDefs,
  entities: [Document],
  migrations,
  configSchema,
  defaultPort: 4001,
  routes: ({ db, logger, config }) =>
    uploadRoutes({ db, logger, secret: config.INTERNAL_SIGNING_SECRET, maxFileBytes: config.DOCUMENT_MAX_FILE_BYTES, maxTextBytes: config.DOCUMENT_MAX_BYTES }),
  resolvers: ({ config, env }) => {
    // Tests only (NODE_ENV=test): die right after an upload's commit, before its answer, as a crash there would.
    const exitAfterCommit = config.NODE_ENV === 'test' && env.TRIBUTARY_TEST_EXIT_AFTER_COMMIT === '1';
    return {
    Upload,
    Query: {
      document: (_: unknown, args: { id: string }, ctx: SubgraphContext) => readDocument(ctx.em, 'id', args.id, ctx.tenantId),
      documents: (_: unknown, args: { first?: number | null; after?: string | null }, ctx: SubgraphContext) =>
        newestFirstPage(
          args,
          (after, limit) => ctx.em.find(Document, { tenantId: ctx.tenantId, ...after }, { orderBy: { createdAt: 'desc', id: 'desc' }, limit }),
          toGraphQL,
        ),
      // This service vouches for the job's existence; its state comes from the job view.
      job: async (_: unknown, args: { id: string }, ctx: SubgraphContext) => {
        const doc = await readDocument(ctx.em, 'job_id', args.id, ctx.tenantId);
        // The whole document: Job.document is taken from here when the plan starts here.
        return doc ? jobOf(doc) : null;
      },
    },
    Mutation: {
      uploadDocument: async (_: unknown, { input }: { input: UploadInput }, ctx: SubgraphContext) => {
        const title = input.title.trim();
        if (title.length === 0) throw badUserInput('title must not be empty', 'title');
        if (title.length > config.DOCUMENT_MAX_TITLE_LENGTH) throw badUserInput(`title must be at most ${config.DOCUMENT_MAX_TITLE_LENGTH} characters`, 'title');
        const hasContent = input.content !== null && input.content !== undefined;
        const hasFile = input.file !== null && input.file !== undefined;
        if (hasContent === hasFile) throw badUserInput('give exactly one of content and file', hasContent ? 'file' : 'content');
        const priority: JobPriority = input.priority ?? 'NORMAL';
        let content: string;
        let text: string;
        let contentType: string;
        let eventType: ContentType;
        if (hasFile) {
          if (input.contentType) throw badUserInput("a file's type is read from its bytes: leave contentType out", 'contentType');
          content = '';
          text = '';
          contentType = '';
          eventType = 'text/plain';
        } else {
          content = input.content!;
          if (content.trim().length === 0) throw badUserInput('content must not be empty', 'content');
          const bytes = Buffer.byteLength(content, 'utf8');
          if (bytes > config.DOCUMENT_MAX_BYTES) throw badUserInput(`content is ${bytes} bytes; the limit is ${config.DOCUMENT_MAX_BYTES}`, 'content');
          const normalized = normalizeContentType(input.contentType);
          if (!normalized) throw badUserInput(`contentType must be one of ${CONTENT_TYPES.join(', ')}`, 'contentType');
          contentType = eventType = normalized;
          text = extractText(content, normalized);
          if (text.length === 0) throw badUserInput('content has no text once its markup is removed', 'content');
        }

        // With an Idempotency-Key, a retry of the same upload by the same user gets the first
        // answer (same document, same job), with no second document or event (no second analysis).
        const key = ctx.idempotencyKey;
        const scope = key !== undefined ? idempotencyScope(ctx.tenantId, ctx.userId, 'uploadDocument') : undefined;
        const now = new Date();
        const id = randomUUID();
        // A version 7 id carries its creation time: the job view can state a job it has not
        // heard of yet (QUEUED since its upload) without asking anyone.
        const jobId = uuidv7({ msecs: now.getTime() });
        let file: ReturnType<typeof toFile> | null = null;
        // The document, its file's claim, its event and its idempotency key commit together or not at all (transactional outbox).
        const doc = await ctx.em.transactional(async (tx) => {
          let staged: (FileRow & { text: string }) | undefined;
          if (hasFile) {
            [staged] = await queryRows<FileRow & { text: string }>(
              tx,
              'select id, name, content_type, size, sha256, text from files where id = ? and tenant_id = ? and document_id is null for update',
              [input.file, ctx.tenantId],
            );
            if (!staged) throw badUserInput('no uploaded file has this reference (send the file in a multipart request)', 'file');
          }
          const create = async () => {
            if (staged) {
              // Its text lives on in the document; the file keeps its bytes.
              await queryRun(tx, "update files set document_id = ?, text = '' where id = ?", [id, staged.id]);
              content = text = staged.text;
              contentType = staged.content_type;
              file = toFile(staged);
            }
            const created = tx.create(Document, {
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
            tx.persist(created);
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
            return created;
          };
          if (key === undefined || scope === undefined) return create();
          // What the request asks for: a file by its bytes' hash, name and type (each attempt stages it anew under a new reference).
          // The priority only when it is not the default, so a key stored before priorities existed still matches its retry.
          const hash = requestHash({
            ...(staged ? { title, file: { sha256: staged.sha256, name: staged.name, contentType: staged.content_type } } : { title, content, contentType: input.contentType ?? null }),
            ...(priority === 'NORMAL' ? {} : { priority }),
          });
          let created: Document | undefined;
          const outcome = await idempotent(tx, { scope, key, requestHash: hash, ttlHours: config.IDEMPOTENCY_KEY_TTL_HOURS }, async () => {
            created = await create();
            return { documentId: created.id };
          });
          if (created) return created;
          // The first attempt's document; this attempt's staged file (if any) stays unclaimed and is swept.
          const first = await tx.findOne(Document, { id: outcome.response.documentId, tenantId: ctx.tenantId });
          if (!first) throw new GraphQLError('the document of this Idempotency-Key is gone', { extensions: { code: 'NOT_FOUND' } });
          const [row] = await queryRows<FileRow>(tx, 'select id, name, content_type, size, sha256 from files where document_id = ? and tenant_id = ?', [first.id, ctx.tenantId]);
          file = row ? toFile(row) : null;
          return first;
        });
        if (exitAfterCommit) process.kill(process.pid, 'SIGKILL');
        const createdAt = doc.createdAt.toISOString();
        return {
          document: { ...toGraphQL(doc), file },
          // The job as it was when it was created (a retry gets the first answer); the jobs view catches up from the event.
          job: { ...jobOf(toGraphQL(doc)), status: 'QUEUED', attempts: 0, error: null, createdAt, updatedAt: createdAt, completedAt: null, document: { ...toGraphQL(doc), file } },
        };
      },
    },
    Document: {
      __resolveReference: (ref: { id: string }, ctx: SubgraphContext) => readDocument(ctx.em, 'id', ref.id, ctx.tenantId),
      job: (doc: { jobId: string; jobPriority: JobPriority; id: string }) => jobOf(doc),
      file: async (doc: { id: string; file?: ReturnType<typeof toFile> | null }, _: unknown, ctx: SubgraphContext) => {
        if (doc.file !== undefined) return doc.file;
        const [row] = await queryRows<FileRow>(ctx.em, 'select id, name, content_type, size, sha256 from files where document_id = ? and tenant_id = ?', [doc.id, ctx.tenantId]);
        return row ? toFile(row) : null;
      },
      content: async (doc: { id: string; content?: string }, _: unknown, ctx: SubgraphContext) => {
        if (doc.content !== undefined) return doc.content;
        const [row] = await queryRows<{ content: string }>(ctx.em, 'select content from documents where id = ? and tenant_id = ?', [doc.id, ctx.tenantId]);
        return row?.content ?? null;
      },
    },
    Job: {
      // Job.document is shareable: when the plan takes it from here, its fields come from here
      // too, so the job carries the whole document rather than a reference.
      __resolveReference: async (ref: { id: string }, ctx: SubgraphContext) => {
        const doc = await readDocument(ctx.em, 'job_id', ref.id, ctx.tenantId);
        if (!doc) throw notFound('Job', ref.id);
        return { ...jobOf(doc), id: ref.id };
      },
    },
  };
  },
};
