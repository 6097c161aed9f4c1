import { randomUUID } from 'node:crypto';
import { v7 as uuidv7, validate as isUuid } from 'uuid';
import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import { publish } from '@tributary/core/events';
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
      document: async (_: unknown, args: { id: string }, ctx: SubgraphContext) => {
        const doc = await ctx.em.findOne(Document, { id: args.id, tenantId: ctx.tenantId });
        return doc ? toGraphQL(doc) : null;
      },
      documents: (_: unknown, args: { first?: number | null; after?: string | null }, ctx: SubgraphContext) =>
        newestFirstPage(
          args,
          (after, limit) => ctx.em.find(Document, { tenantId: ctx.tenantId, ...after }, { orderBy: { createdAt: 'desc', id: 'desc' }, limit }),
          toGraphQL,
        ),
      // This service vouches for the job's existence; its state comes from the job view.
      job: async (_: unknown, args: { id: string }, ctx: SubgraphContext) => {
        if (!isUuid(args.id)) return null;
        const doc = await ctx.em.findOne(Document, { jobId: args.id, tenantId: ctx.tenantId }, { fields: ['id', 'jobId'] });
        return doc ? { id: doc.jobId, document: { id: doc.id } } : null;
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
          job: { id: doc.jobId, status: 'QUEUED', attempts: 0, error: null, createdAt, updatedAt: createdAt, completedAt: null, document: { id: doc.id } },
        };
      },
    },
    Document: {
      __resolveReference: async (ref: { id: string }, ctx: SubgraphContext) => {
        const doc = await ctx.em.findOne(Document, { id: ref.id, tenantId: ctx.tenantId });
        return doc ? toGraphQL(doc) : null;
      },
      job: (doc: { jobId: string; id: string }) => ({ id: doc.jobId, document: { id: doc.id } }),
    },
    Job: {
      __resolveReference: async (ref: { id: string }, ctx: SubgraphContext) => {
        const doc = await ctx.em.findOne(Document, { jobId: ref.id, tenantId: ctx.tenantId });
        if (!doc) throw notFound('Job', ref.id);
        return { id: ref.id, document: { id: doc.id } };
      },
      // Job.document is shareable: when the plan takes it from here, its fields come from here
      // too, so hand out the whole document rather than the reference.
      document: async (job: { document: { id: string } }, _: unknown, ctx: SubgraphContext) => {
        const doc = await ctx.em.findOne(Document, { id: job.document.id, tenantId: ctx.tenantId });
        return doc ? toGraphQL(doc) : null;
      },
    },
  }),
};
