import { randomUUID } from 'node:crypto';
import { v7 as uuidv7, validate as isUuid } from 'uuid';
import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import { publish } from '@tributary/core/events';
import { queryRows } from '@tributary/core/db';
import { subgraphConfigSchema, type ServiceDefinition, type SubgraphContext } from '@tributary/core/service';
import { z } from 'zod';
import { Document, migrations } from './entities.ts';
import { typeDefs } from './schema.ts';
import { CONTENT_TYPES, extractText, normalizeContentType } from './text.ts';

export const configSchema = subgraphConfigSchema.extend({
  /** Largest accepted document content, in bytes (UTF-8). Default 1 MiB. */
  DOCUMENT_MAX_BYTES: z.coerce.number().int().positive().default(1024 * 1024),
  /** Longest accepted title, in characters. Default 500. */
  DOCUMENT_MAX_TITLE_LENGTH: z.coerce.number().int().positive().default(500),
});
export type DocumentsConfig = z.infer<typeof configSchema>;

interface UploadInput {
  title: string;
  content: string;
  contentType?: string | null;
}

interface DocumentRow {
  id: string;
  title: string;
  content_type: string;
  size: number;
  job_id: string;
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
  const [row] = await queryRows<DocumentRow>(em, `select id, title, content_type, size, job_id, created_at from documents where ${by} = ? and tenant_id = ?`, [id, tenantId]);
  return row ? { id: row.id, title: row.title, contentType: row.content_type, size: row.size, createdAt: new Date(row.created_at).toISOString(), jobId: row.job_id } : null;
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
  };
}

export const documentsService: ServiceDefinition<DocumentsConfig> = {
  name: 'documents',
  typeDefs,
  entities: [Document],
  migrations,
  configSchema,
  defaultPort: 4001,
  resolvers: ({ config }) => ({
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
        return doc ? { id: doc.jobId, document: doc } : null;
      },
    },
    Mutation: {
      uploadDocument: async (_: unknown, { input }: { input: UploadInput }, ctx: SubgraphContext) => {
        const title = input.title.trim();
        if (title.length === 0) throw badUserInput('title must not be empty', 'title');
        if (title.length > config.DOCUMENT_MAX_TITLE_LENGTH) throw badUserInput(`title must be at most ${config.DOCUMENT_MAX_TITLE_LENGTH} characters`, 'title');
        if (input.content.trim().length === 0) throw badUserInput('content must not be empty', 'content');
        const size = Buffer.byteLength(input.content, 'utf8');
        if (size > config.DOCUMENT_MAX_BYTES) throw badUserInput(`content is ${size} bytes; the limit is ${config.DOCUMENT_MAX_BYTES}`, 'content');
        const contentType = normalizeContentType(input.contentType);
        if (!contentType) throw badUserInput(`contentType must be one of ${CONTENT_TYPES.join(', ')}`, 'contentType');
        const text = extractText(input.content, contentType);
        if (text.length === 0) throw badUserInput('content has no text once its markup is removed', 'content');

        const now = new Date();
        const doc = ctx.em.create(Document, {
          id: randomUUID(),
          tenantId: ctx.tenantId,
          title,
          content: input.content,
          text,
          contentType,
          size,
          // A version 7 id carries its creation time: the job view can state a job it has not
          // heard of yet (QUEUED since its upload) without asking anyone.
          jobId: uuidv7({ msecs: now.getTime() }),
          uploadedBy: ctx.userId,
          createdAt: now,
        });
        // The document and its event commit together or not at all (transactional outbox).
        await ctx.em.transactional(async (tx) => {
          tx.persist(doc);
          await publish(tx, 'documents', [
            {
              type: 'document.uploaded',
              subject: doc.id,
              tenantId: ctx.tenantId,
              data: {
                documentId: doc.id,
                jobId: doc.jobId,
                title,
                text,
                contentType,
                ...(ctx.userId ? { uploadedBy: ctx.userId } : {}),
                uploadedAt: now.toISOString(),
              },
            },
          ]);
        });
        const createdAt = now.toISOString();
        return {
          document: toGraphQL(doc),
          // The job as it is at this instant; the jobs view catches up from the event.
          job: { id: doc.jobId, status: 'QUEUED', attempts: 0, error: null, createdAt, updatedAt: createdAt, completedAt: null, document: toGraphQL(doc) },
        };
      },
    },
    Document: {
      __resolveReference: (ref: { id: string }, ctx: SubgraphContext) => readDocument(ctx.em, 'id', ref.id, ctx.tenantId),
      job: (doc: { jobId: string; id: string }) => ({ id: doc.jobId, document: doc }),
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
        return { id: ref.id, document: doc };
      },
    },
  }),
};
