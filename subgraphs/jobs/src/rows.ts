import { validate as isUuid, version as uuidVersion } from 'uuid';
import type { Job, JobPriority, JobStatus } from './entities.ts';
import type { JobState } from './transitions.ts';

/** A job's columns, as a plain statement reads them. */
export interface JobRow {
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

/** {@link JobRow}'s columns, for a select. */
export const COLUMNS = 'id, tenant_id, document_id, status, attempts, error_code, error_message, created_at, completed_at, progress_done, progress_total, priority';

/** The creation time a version 7 UUID carries (its first 48 bits, ms since the epoch), ISO-8601; undefined for other ids. */
export function uuidTime(id: string): string | undefined {
  if (!isUuid(id) || uuidVersion(id) !== 7) return undefined;
  return new Date(Number.parseInt(id.slice(0, 8) + id.slice(9, 13), 16)).toISOString();
}

/** The part of a stored job the events change. */
export function stateOf(row: JobRow): JobState {
  return {
    status: row.status,
    attempts: row.attempts,
    error: row.error_code ? { code: row.error_code, message: row.error_message ?? '' } : null,
    createdAt: new Date(row.created_at),
    completedAt: row.completed_at === null ? null : new Date(row.completed_at),
    progress: row.progress_total === null ? null : { done: row.progress_done ?? 0, total: row.progress_total },
    priority: row.priority,
  };
}

/** A stored job as GraphQL shows it: the one mapping, whether the row came from a plain statement or the ORM. */
export function rowToGraphQL(row: JobRow & { updated_at: Date | string }) {
  const state = stateOf(row);
  return {
    id: row.id,
    status: state.status,
    attempts: state.attempts,
    error: state.error,
    createdAt: state.createdAt.toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
    completedAt: state.completedAt?.toISOString() ?? null,
    progress: state.progress,
    priority: state.priority,
    document: { id: row.document_id },
  };
}

/** The ORM's job as its columns. */
const columnsOf = (job: Job): JobRow & { updated_at: Date } => ({
  id: job.id,
  tenant_id: job.tenantId,
  document_id: job.documentId,
  status: job.status,
  attempts: job.attempts,
  error_code: job.errorCode ?? null,
  error_message: job.errorMessage ?? null,
  created_at: job.createdAt,
  completed_at: job.completedAt ?? null,
  progress_done: job.progressDone ?? null,
  progress_total: job.progressTotal ?? null,
  priority: job.priority,
  updated_at: job.updatedAt,
});

/** The ORM's job as GraphQL shows it. */
export const toGraphQL = (job: Job) => rowToGraphQL(columnsOf(job));
