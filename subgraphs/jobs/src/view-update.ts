import type { ParsedEvent } from '@tributary/contracts';
import type { HandlerContext, NewEvent } from '@tributary/core/events';
import { queryRows, queryRun, valuesPlaceholders } from '@tributary/core/db';
import { metrics } from '@tributary/core/metrics';
import type { JobPriority } from './entities.ts';
import { COLUMNS, stateOf, uuidTime, type JobRow } from './rows.ts';
import { applyEvent, isTerminal, type JobState } from './transitions.ts';

/** The events that move a job, each naming its job and document (those the job view consumes). */
type JobEvent = ParsedEvent<'document.uploaded/v1' | 'analysis.started/v1' | 'analysis.progress/v1' | 'analysis.completed/v1' | 'analysis.failed/v1' | 'analysis.cancelled/v1'>;
const jobEventSchemas = new Set<string>(['document.uploaded/v1', 'analysis.started/v1', 'analysis.progress/v1', 'analysis.completed/v1', 'analysis.failed/v1', 'analysis.cancelled/v1']);
const movesJob = (event: ParsedEvent): event is JobEvent => jobEventSchemas.has(event.dataschema);

/** The batch's job events by job, each job's in the batch's order. */
function eventsByJob(events: ParsedEvent[]): Map<string, JobEvent[]> {
  const byJob = new Map<string, JobEvent[]>();
  for (const event of events) {
    if (!movesJob(event)) continue;
    const list = byJob.get(event.data.jobId);
    if (list) list.push(event);
    else byJob.set(event.data.jobId, [event]);
  }
  return byJob;
}

/** The row a job's first event creates when the view has none yet: QUEUED since its upload. */
function newJobRow(id: string, jobEvents: JobEvent[]): JobRow {
  const first = jobEvents[0]!;
  // A version 7 id says when the upload was; document.uploaded, whenever it comes, confirms it.
  const createdAt = uuidTime(id) ?? first.time;
  // The priority is the upload's, when this batch has it; else NORMAL until the upload is seen.
  const upload = jobEvents.find((e) => e.dataschema === 'document.uploaded/v1');
  const priority: JobPriority = (upload?.dataschema === 'document.uploaded/v1' && upload.data.priority) || 'NORMAL';
  return {
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
  };
}

/**
 * Every job of the batch, locked, in job id order: the missing ones inserted first, then the
 * others read. `created` names those this batch inserted.
 */
async function lockJobRows(em: HandlerContext['em'], ids: string[], byJob: Map<string, JobEvent[]>, nowIso: string): Promise<{ rows: JobRow[]; created: Set<string> }> {
  const fresh = new Map(ids.map((id) => [id, newJobRow(id, byJob.get(id)!)]));
  const insertParams = [...fresh.values()].flatMap((row) => [row.id, row.tenant_id, row.document_id, row.created_at, nowIso, row.priority]);
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
  return { rows, created };
}

/** A job id is a UUID minted by the documents service; another tenant's event for it is a bug or an attack, never a state change. */
function refuseForeignTenant(row: JobRow, jobEvents: JobEvent[]): void {
  const foreign = jobEvents.find((e) => e.tenantid !== row.tenant_id);
  if (foreign) throw Object.assign(new Error(`event ${foreign.id} names job ${row.id} of another tenant`), { code: 'TENANT_MISMATCH', unrecoverable: true });
}

/** The columns of one job's update, in the order of {@link writeJobs}' values. */
const updateParams = (id: string, state: JobState, nowIso: string): unknown[] => [
  id,
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
];
const UPDATE_COLUMNS = 11;

/** Write the changed jobs back in one statement. */
async function writeJobs(em: HandlerContext['em'], updates: unknown[]): Promise<void> {
  if (updates.length === 0) return;
  await queryRun(
    em,
    `update jobs set status = v.status, attempts = v.attempts::int, error_code = v.error_code, error_message = v.error_message,
       created_at = v.created_at::timestamptz, completed_at = v.completed_at::timestamptz, updated_at = v.updated_at::timestamptz,
       progress_done = v.progress_done::int, progress_total = v.progress_total::int, priority = v.priority
     from (values ${valuesPlaceholders(updates.length / UPDATE_COLUMNS, UPDATE_COLUMNS)}) as v (id, status, attempts, error_code, error_message, created_at, completed_at, updated_at, progress_done, progress_total, priority)
     where jobs.id = v.id::uuid`,
    updates,
  );
}

/** A job's new state as `job.updated`. */
function jobUpdated(row: JobRow, state: JobState, jobEvents: JobEvent[], nowIso: string): NewEvent<'job.updated'> {
  return {
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
  };
}

/**
 * Apply a batch of events to the job view in one transaction, and announce each job's new
 * state with one `job.updated` (a job several events moved in this batch gets one, its last).
 * Plain statements, no unit of work: rows missing so far are inserted (whatever event comes
 * first), then every row of the batch is locked, the events are applied in memory and the
 * changed rows written back in one statement. Rows are inserted and locked in job id order, so
 * concurrent batches touching the same jobs wait for each other instead of deadlocking.
 */
export async function updateViews(events: ParsedEvent[], { em, publish }: HandlerContext): Promise<void> {
  const byJob = eventsByJob(events);
  if (byJob.size === 0) return;
  const ids = [...byJob.keys()].sort();
  const now = new Date();
  const nowIso = now.toISOString();
  const { rows, created } = await lockJobRows(em, ids, byJob, nowIso);
  const updates: unknown[] = [];
  const announce: NewEvent<'job.updated'>[] = [];
  for (const row of rows) {
    const jobEvents = byJob.get(row.id)!;
    refuseForeignTenant(row, jobEvents);
    const before = stateOf(row);
    let state = before;
    for (const event of jobEvents) state = applyEvent(state, event) ?? state;
    // A row this batch inserted is announced even if its events changed nothing more: the view has a new job.
    if (state === before && !created.has(row.id)) continue;
    if (state !== before) {
      updates.push(...updateParams(row.id, state, nowIso));
      if (state.status !== before.status && isTerminal(state.status)) {
        metrics.jobDuration.observe({ outcome: state.status.toLowerCase() }, Math.max(0, ((state.completedAt ?? now).getTime() - state.createdAt.getTime()) / 1000));
      }
    }
    announce.push(jobUpdated(row, state, jobEvents, nowIso));
  }
  await writeJobs(em, updates);
  await publish(announce);
}
