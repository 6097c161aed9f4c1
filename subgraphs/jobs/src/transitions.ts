import type { ParsedEvent } from '@tributary/contracts';
import type { JobPriority, JobStatus } from './entities.ts';

/** The part of a job the events change. */
export interface JobState {
  status: JobStatus;
  attempts: number;
  error: { code: string; message: string } | null;
  createdAt: Date;
  completedAt: Date | null;
  /** A long document's analysis: calls done of the total; null until it reports any. */
  progress: { done: number; total: number } | null;
  /** As uploaded; NORMAL until document.uploaded is seen. */
  priority: JobPriority;
}

const rank: Record<JobStatus, number> = { QUEUED: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2, CANCELLED: 2 };
export const isTerminal = (status: JobStatus) => rank[status] === 2;

/**
 * Apply one event to a job. Events may arrive out of order or twice, so the state only moves
 * forward: QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED, the first terminal state is final,
 * attempts only grow. A CANCELLED job is not changed by any later analysis event at all (not
 * even its attempts): its analysis.cancelled said what the job came to. Returns the new state,
 * or null when the event changes nothing.
 */
export function applyEvent(state: JobState, event: ParsedEvent): JobState | null {
  const next: JobState = { ...state };
  if (state.status === 'CANCELLED' && event.dataschema !== 'document.uploaded/v1') return null;
  switch (event.dataschema) {
    case 'document.uploaded/v1':
      // The upload time is the job's true creation time, whenever this event arrives; its
      // priority too (an upload from before priorities existed was NORMAL).
      next.createdAt = new Date(event.data.uploadedAt);
      next.priority = event.data.priority ?? 'NORMAL';
      break;
    case 'analysis.started/v1':
      if (rank[state.status] < rank.RUNNING) next.status = 'RUNNING';
      next.attempts = Math.max(state.attempts, event.data.attempt);
      break;
    case 'analysis.progress/v1': {
      if (isTerminal(state.status)) return null;
      const { done, total } = event.data;
      // Out of order or twice: only forward, and a retry's new plan (another total) replaces the old.
      if (state.progress && state.progress.total === total && done <= state.progress.done) return null;
      if (rank[state.status] < rank.RUNNING) next.status = 'RUNNING';
      next.progress = { done, total };
      break;
    }
    case 'analysis.completed/v1':
      if (isTerminal(state.status)) return null;
      next.status = 'COMPLETED';
      next.attempts = Math.max(state.attempts, event.data.attempts, 1);
      next.completedAt = new Date(event.data.completedAt);
      break;
    case 'analysis.failed/v1':
      if (isTerminal(state.status)) return null;
      next.status = 'FAILED';
      next.attempts = Math.max(state.attempts, event.data.attempts);
      next.error = event.data.error;
      next.completedAt = new Date(event.data.failedAt);
      break;
    case 'analysis.cancelled/v1':
      if (isTerminal(state.status)) return null;
      next.status = 'CANCELLED';
      next.attempts = Math.max(state.attempts, event.data.attempts);
      next.completedAt = new Date(event.data.cancelledAt);
      break;
    default:
      return null;
  }
  const same =
    next.status === state.status &&
    next.attempts === state.attempts &&
    next.createdAt.getTime() === state.createdAt.getTime() &&
    (next.completedAt?.getTime() ?? null) === (state.completedAt?.getTime() ?? null) &&
    next.priority === state.priority &&
    next.error?.code === state.error?.code &&
    next.progress?.done === state.progress?.done &&
    next.progress?.total === state.progress?.total;
  return same ? null : next;
}
