import { validate as isUuid } from 'uuid';
import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import { queryRows } from '@tributary/core/db';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { GraphQLError, GraphQLScalarType } from 'graphql';
import { configSchema, type DocumentsConfig } from './config.ts';
import { Document, migrations, type JobPriority } from './entities.ts';
import { uploadRoutes } from './uploads.ts';
import { uploadDocument, type UploadInput } from './upload-document.ts';
import { typeDefs } from './schema.ts';
import { jobOf, readDocument, readFileOf, toGraphQL, type FileView } from './views.ts';

export { configSchema, type DocumentsConfig } from './config.ts';

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

function resolvers(config: DocumentsConfig, env: Readonly<Record<string, string | undefined>>) {
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
        const { doc, file } = await uploadDocument(ctx, input, config);
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
      file: async (doc: { id: string; file?: FileView | null }, _: unknown, ctx: SubgraphContext) => {
        if (doc.file !== undefined) return doc.file;
        return readFileOf(ctx.em, doc.id, ctx.tenantId);
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
}

export const documentsService: ServiceDefinition<DocumentsConfig> = {
  name: 'documents',
  typeDefs,
  entities: [Document],
  migrations,
  configSchema,
  defaultPort: 4001,
  routes: ({ db, logger, config }) =>
    uploadRoutes({ db, logger, secret: config.INTERNAL_SIGNING_SECRET, maxFileBytes: config.DOCUMENT_MAX_FILE_BYTES, maxTextBytes: config.DOCUMENT_MAX_BYTES }),
  resolvers: ({ config, env }) => resolvers(config, env),
};
