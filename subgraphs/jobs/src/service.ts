import { LockMode } from '@mikro-orm/core';
import { validate as isUuid, version as uuidVersion } from 'uuid';
import type { ParsedEvent } from '@tributary/contracts';
import { newestFirstPage } from '@tributary/core/graphql';
import type { HandlerContext } from '@tributary/core/events';
import { metrics } from '@tributary/core/metrics';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { Job, JOB_STATUSES, migrations, type JobStatus } from './entities.ts';
import { typeDefs } from './schema.ts';
import { applyEvent, type JobState } from './transitions.ts';

export function toGraphQL(job: Job) {
  return {
    id: job.id,
    status: job.status,
    attempts: job.attempts,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt.toISOString(),
    updatedAt: job.updatedAt.toISOString(),
    completedAt: job.completedAt?.toISOString() ?? null,
    document: { id: job.documentId },
  };
}

/** The creation time a version 7 UUID carries (its first 48 bits, ms since the epoch), ISO-8601; undefined for other ids. */
export function uuidTime(id: string): string | undefined {
  if (!isUuid(id) || uuidVersion(id) !== 7) return undefined;
  return new Date(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toISOString();
}

function jobIdOf(event: ParsedEvent): { jobId: string; documentId: string } {
  return { jobId: event.data.jobId, documentId: event.data.documentId };
}

/** Apply one event to the job view, and announce the change with `job.updated`. */
async function updateView(event: ParsedEvent, { em, publish }: HandlerContext): Promise<void> {
  if (event.dataschema === 'job.updated/v1') return;
  const { jobId, documentId } = jobIdOf(event);
  const now = new Date();
  // Create the row if this is the first event we see for the job (whatever its type), then
  // lock it: concurrent events for one job apply one after the other.
  const inserted = await em.execute<{ id: string }[]>(
    `insert into jobs (id, tenant_id, document_id, status, attempts, created_at, updated_at)
     values (?, ?, ?, 'QUEUED', 0, ?, ?) on conflict (id) do nothing returning id`,
    [jobId, event.tenantid, documentId, new Date(event.time), now],
  );
  const job = await em.findOneOrFail(Job, { id: jobId }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
  if (job.tenantId !== event.tenantid) {
    // A job id is a UUID minted by the documents service; another tenant's event for it is a bug
    // or an attack, never a state change.
    throw Object.assign(new Error(`event ${event.id} names job ${jobId} of another tenant`), { code: 'TENANT_MISMATCH', unrecoverable: true });
  }
  const state: JobState = {
    status: job.status,
    attempts: job.attempts,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt,
    completedAt: job.completedAt ?? null,
  };
  const next = applyEvent(state, event);
  if (!next && inserted.length === 0) return;
  if (next) {
    job.status = next.status;
    job.attempts = next.attempts;
    job.errorCode = next.error?.code ?? null;
    job.errorMessage = next.error?.message ?? null;
    job.createdAt = next.createdAt;
    job.completedAt = next.completedAt;
  }
  job.updatedAt = now;
  await em.flush();
  if (next && next.status !== state.status && (next.status === 'COMPLETED' || next.status === 'FAILED')) {
    metrics.jobDuration.observe({ outcome: next.status.toLowerCase() }, Math.max(0, ((next.completedAt ?? now).getTime() - job.createdAt.getTime()) / 1000));
  }
  const view = toGraphQL(job);
  await publish([
    {
      type: 'job.updated',
      subject: job.id,
      tenantId: job.tenantId,
      data: { jobId: job.id, documentId: job.documentId, status: view.status, attempts: view.attempts, error: view.error, createdAt: view.createdAt, updatedAt: view.updatedAt, completedAt: view.completedAt },
    },
  ]);
}

export const jobsService: ServiceDefinition = {
  name: 'jobs',
  typeDefs,
  entities: [Job],
  migrations,
  defaultPort: 4002,
  consumers: () => [
    {
      name: 'job-view',
      types: ['document.uploaded', 'analysis.started', 'analysis.completed', 'analysis.failed'],
      handler: updateView,
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
       * minted from the upload's clock reading.
       */
      __resolveReference: async (ref: { id: string }, ctx: SubgraphContext) => {
        const job = await ctx.em.findOne(Job, { id: ref.id, tenantId: ctx.tenantId });
        if (job) return toGraphQL(job);
        const createdAt = uuidTime(ref.id);
        if (!createdAt) return null;
        return { id: ref.id, status: 'QUEUED', attempts: 0, error: null, createdAt, updatedAt: createdAt, completedAt: null };
      },
    },
  },
};
