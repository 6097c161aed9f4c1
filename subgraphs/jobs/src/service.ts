import { validate as isUuid, version as uuidVersion } from 'uuid';
import type { ParsedEvent } from '@tributary/contracts';
import { newestFirstPage } from '@tributary/core/graphql';
import type { HandlerContext, NewEvent } from '@tributary/core/events';
import { queryRows, queryRun, valuesPlaceholders } from '@tributary/core/db';
import { metrics } from '@tributary/core/metrics';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { Job, JOB_STATUSES, migrations, type JobPriority, type JobStatus } from './entities.ts';
import { typeDefs } from './schema.ts';
import { applyEvent, isTerminal, type JobState } from './transitions.ts';

export function toGraphQL(job: Job) {
  return {
    id: job.id,
    status: job.status,
    attempts: job.attempts,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt.toISOString(),
    updatedAt: job.updatedAt.toISOString(),
    completedAt: job.completedAt?.toISOString() ?? null,
    progress: job.progressTotal === null || job.progressTotal === undefined ? null : { done: job.progressDone ?? 0, total: job.progressTotal },
    priority: job.priority,
    document: { id: job.documentId },
  };
}

/** The creation time a version 7 UUID carries (its first 48 bits, ms since the epoch), ISO-8601; undefined for other ids. */
export function uuidTime(id: string): string | undefined {
  if (!isUuid(id) || uuidVersion(id) !== 7) return undefined;
  return new Date(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toISOString();
}

function rowToGraphQL(row: JobRow & { updated_at: Date | string }) {
  const iso = (t: Date | string) => new Date(t).toISOString();
  return {
    id: row.id,
    status: row.status,
    attempts: row.attempts,
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
    completedAt: row.completed_at === null ? null : iso(row.completed_at),
    progress: row.progress_total === null ? null : { done: row.progress_done ?? 0, total: row.progress_total },
    priority: row.priority,
    document: { id: row.document_id },
  };
}

interface JobRow {
  id: string;
  tenant_id: string;
  document_id: string;
  status: JobStatus;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
  created_at: Date | string;
  completed_at: Date | string | null;
  progress_done: number | null;
  progress_total: number | null;
  priority: JobPriority;
}

const COLUMNS = 'id, tenant_id, document_id, status, attempts, error_code, error_message, created_at, completed_at, progress_done, progress_total, priority';

/** The events that move a job, each naming its job and document (those the job view consumes). */
type JobEvent = ParsedEvent<'document.uploaded/v1' | 'analysis.started/v1' | 'analysis.progress/v1' | 'analysis.completed/v1' | 'analysis.failed/v1' | 'analysis.cancelled/v1'>;
const jobEventSchemas = new Set<string>(['document.uploaded/v1', 'analysis.started/v1', 'analysis.progress/v1', 'analysis.completed/v1', 'analysis.failed/v1', 'analysis.cancelled/v1']);
const movesJob = (event: ParsedEvent): event is JobEvent => jobEventSchemas.has(event.dataschema);

/**
 * Apply a batch of events to the job view in one transaction, and announce each job's new
 * state with one `job.updated` (a job several events moved in this batch gets one, its last).
 * Plain statements, no unit of work: rows missing so far are inserted (whatever event comes
 * first), then every row of the batch is locked, the events are applied in memory and the
 * changed rows written back in one statement. Rows are inserted and locked in job id order, so
 * concurrent batches touching the same jobs wait for each other instead of deadlocking.
 */
export async function updateViews(events: ParsedEvent[], { em, publish }: HandlerContext): Promise<void> {
  const byJob = new Map<string, JobEvent[]>();
  for (const event of events) {
    if (!movesJob(event)) continue;
    const list = byJob.get(event.data.jobId);
    if (list) list.push(event);
    else byJob.set(event.data.jobId, [event]);
  }
  if (byJob.size === 0) return;
  const ids = [...byJob.keys()].sort();
  const now = new Date();
  const nowIso = now.toISOString();
  const insertParams: unknown[] = [];
  const fresh = new Map<string, JobRow>();
  for (const id of ids) {
    const jobEvents = byJob.get(id)!;
    const first = jobEvents[0]!;
    // A version 7 id says when the upload was; document.uploaded, whenever it comes, confirms it.
    const createdAt = uuidTime(id) ?? first.time;
    // The priority is the upload's, when this batch has it; else NORMAL until the upload is seen.
    const upload = jobEvents.find((e) => e.dataschema === 'document.uploaded/v1');
    const priority: JobPriority = (upload?.dataschema === 'document.uploaded/v1' && upload.data.priority) || 'NORMAL';
    insertParams.push(id, first.tenantid, first.data.documentId, createdAt, nowIso, priority);
    fresh.set(id, {
      id,
      tenant_id: first.tenantid,
      document_id: first.data.documentId,
      status: 'QUEUED',
      attempts: 0,
      error_code: null,
      error_message: null,
      created_at: createdAt,
      completed_at: null,
      progress_done: null,
      progress_total: null,
      priority,
    });
  }
  const inserted = await queryRows<{ id: string }>(
    em,
    `insert into jobs (id, tenant_id, document_id, status, attempts, created_at, updated_at, priority)
     select v.id::uuid, v.tenant_id, v.document_id, 'QUEUED', 0, v.created_at::timestamptz, v.updated_at::timestamptz, v.priority
     from (values ${valuesPlaceholders(ids.length, 6)}) as v (id, tenant_id, document_id, created_at, updated_at, priority)
     order by v.id on conflict (id) do nothing returning id`,
    insertParams,
  );
  const created = new Set(inserted.map((r) => r.id));
  // A row this statement inserted is locked already and holds exactly what was inserted: only
  // the others are read (and locked, in id order, after the inserts, as before). A batch of
  // uploads, whose jobs are all new, reads nothing.
  const existing = ids.filter((id) => !created.has(id));
  const read = existing.length === 0 ? [] : await queryRows<JobRow>(em, `select ${COLUMNS} from jobs where id = any(?::uuid[]) order by id for update`, [existing]);
  const found = new Map(read.map((row) => [row.id, row]));
  // In job id order, as announced before.
  const rows = ids.flatMap((id) => (created.has(id) ? [fresh.get(id)!] : found.has(id) ? [found.get(id)!] : []));
  const updates: unknown[] = [];
  const announce: NewEvent<'job.updated'>[] = [];
  for (const row of rows) {
    const jobEvents = byJob.get(row.id)!;
    const foreign = jobEvents.find((e) => e.tenantid !== row.tenant_id);
    if (foreign) {
      // A job id is a UUID minted by the documents service; another tenant's event for it is a
      // bug or an attack, never a state change.
      throw Object.assign(new Error(`event ${foreign.id} names job ${row.id} of another tenant`), { code: 'TENANT_MISMATCH', unrecoverable: true });
    }
    const before: JobState = {
      status: row.status,
      attempts: row.attempts,
      error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
      createdAt: new Date(row.created_at),
      completedAt: row.completed_at === null ? null : new Date(row.completed_at),
      progress: row.progress_total === null ? null : { done: row.progress_done ?? 0, total: row.progress_total },
      priority: row.priority,
    };
    let state = before;
    for (const event of jobEvents) state = applyEvent(state, event) ?? state;
    if (state === before && !created.has(row.id)) continue;
    if (state !== before) {
      updates.push(
        row.id,
        state.status,
        state.attempts,
        state.error?.code ?? null,
        state.error?.message ?? null,
        state.createdAt.toISOString(),
        state.completedAt?.toISOString() ?? null,
        nowIso,
        state.progress?.done ?? null,
        state.progress?.total ?? null,
        state.priority,
      );
      if (state.status !== before.status && isTerminal(state.status)) {
        metrics.jobDuration.observe({ outcome: state.status.toLowerCase() }, Math.max(0, ((state.completedAt ?? now).getTime() - state.createdAt.getTime()) / 1000));
      }
    }
    announce.push({
      type: 'job.updated',
      subject: row.id,
      tenantId: row.tenant_id,
      // The job's own trace (the upload's), not the batch's.
      causedBy: jobEvents.at(-1)!,
      data: {
        jobId: row.id,
        documentId: row.document_id,
        status: state.status,
        attempts: state.attempts,
        error: state.error,
        createdAt: state.createdAt.toISOString(),
        updatedAt: nowIso,
        completedAt: state.completedAt?.toISOString() ?? null,
        progress: state.progress,
      },
    });
  }
  if (updates.length > 0) {
    await queryRun(
      em,
      `update jobs set status = v.status, attempts = v.attempts::int, error_code = v.error_code, error_message = v.error_message,
         created_at = v.created_at::timestamptz, completed_at = v.completed_at::timestamptz, updated_at = v.updated_at::timestamptz,
         progress_done = v.progress_done::int, progress_total = v.progress_total::int, priority = v.priority
       from (values ${valuesPlaceholders(updates.length / 11, 11)}) as v (id, status, attempts, error_code, error_message, created_at, completed_at, updated_at, progress_done, progress_total, priority)
       where jobs.id = v.id::uuid`,
      updates,
    );
  }
  await publish(announce);
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
