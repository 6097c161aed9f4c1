import { newestFirstPage } from '@tributary/core/graphql';
import { queryRows } from '@tributary/core/db';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { Job, JOB_STATUSES, migrations, type JobStatus } from './entities.ts';
import { COLUMNS, rowToGraphQL, toGraphQL, uuidTime, type JobRow } from './rows.ts';
import { typeDefs } from './schema.ts';
import { updateViews } from './view-update.ts';

export { toGraphQL, uuidTime } from './rows.ts';
export { updateViews } from './view-update.ts';

export const jobsService: ServiceDefinition = {
  name: 'jobs',
  typeDefs,
  entities: [Job],
  migrations,
  defaultPort: 4002,
  consumers: () => [
    {
      name: 'job-view',
      types: ['document.uploaded', 'analysis.started', 'analysis.progress', 'analysis.completed', 'analysis.failed', 'analysis.cancelled'],
      batchHandler: updateViews,
    },
  ],
  resolvers: {
    Query: {
      jobs: (_: unknown, args: { status?: JobStatus | null; first?: number | null; after?: string | null }, ctx: SubgraphContext) => {
        const status = args.status && JOB_STATUSES.includes(args.status) ? { status: args.status } : {};
        return newestFirstPage(
          args,
          (after, limit) => ctx.em.find(Job, { tenantId: ctx.tenantId, ...status, ...after }, { orderBy: { createdAt: 'desc', id: 'desc' }, limit }),
          toGraphQL,
        );
      },
    },
    Job: {
      /**
       * Every reference to a job comes from documents, which created it with its upload and
       * checked the tenant: a job this view has not heard of yet exists and is still as it was
       * uploaded (QUEUED). Its time is the one in its id (UUID version 7), which documents
       * minted from the upload's clock reading. Its priority is NORMAL here, as for a row whose
       * upload this view has not seen yet: a plan takes Job.priority where it already is, and
       * documents, which answers job(id:), Document.job and uploadDocument, stores it from the upload.
       */
      __resolveReference: async (ref: { id: string }, ctx: SubgraphContext) => {
        // A plain statement: this runs for every federated read of a job (each subscription message).
        const [row] = await queryRows<JobRow & { updated_at: Date | string }>(ctx.em, `select ${COLUMNS}, updated_at from jobs where id = ? and tenant_id = ?`, [ref.id, ctx.tenantId]);
        if (row) return rowToGraphQL(row);
        const createdAt = uuidTime(ref.id);
        if (!createdAt) return null;
        return { id: ref.id, status: 'QUEUED', attempts: 0, error: null, createdAt, updatedAt: createdAt, completedAt: null, progress: null, priority: 'NORMAL' };
      },
    },
  },
};
