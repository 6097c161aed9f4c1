import type { ParsedEvent } from '@tributary/contracts';
import type { JobStatus } from './entities.ts';

/** The part of a job the events change. */
export interface JobState {
  status: JobStatus;
  attempts: number;
  error: { code: string; message: string } | null;
  createdAt: Date;
  completedAt: Date | null;
  /** A long document's analysis: calls done of the total; null until it reports any. */
  progress: { done: number; total: number } | null;
}

const rank: Record<JobStatus, number> = { QUEUED: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2 };
export const isTerminal = (status: JobStatus) => rank[status] === 2;

/**
 * Apply one event to a job. Events may arrive out of order or twice, so the state only moves
 * forward: QUEUED → RUNNING → COMPLETED | FAILED, the first terminal state is final, attempts
 * only grow. Returns the new state, or null when the event changes nothing.
 */
export function applyEvent(state: JobState, event: ParsedEvent): JobState | null {
  const next: JobState = { ...state };
  switch (event.dataschema) {
    case 'document.uploaded/v1': {
      // The upload time is the job's true creation time, whenever this event arrives.
      const uploadedAt = new Date(event.data.uploadedAt);
      if (uploadedAt.getTime() === state.createdAt.getTime()) return null;
      next.createdAt = uploadedAt;
      break;
    }
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
    default:
      return null;
  }
  const same =
    next.status === state.status &&
    next.attempts === state.attempts &&
    next.createdAt.getTime() === state.createdAt.getTime() &&
    (next.completedAt?.getTime() ?? null) === (state.completedAt?.getTime() ?? null) &&
    next.error?.code === state.error?.code &&
    next.progress?.done === state.progress?.done &&
    next.progress?.total === state.progress?.total;
  return same ? null : next;
}
