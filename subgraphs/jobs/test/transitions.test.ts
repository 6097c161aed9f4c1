import { randomUUID } from 'node:crypto';
import type { ParsedEvent } from '@tributary/contracts';
import { describe, expect, it } from 'vitest';
import { applyEvent, type JobState } from '../src/transitions.ts';

const base = { specversion: '1.0' as const, source: 'test', subject: 'doc', tenantid: 't', time: '2026-11-28T08:00:00.000Z' };
const ids = { documentId: 'doc', jobId: 'job' };
const uploaded = (at = '2026-11-28T08:00:00.000Z', priority?: 'HIGH' | 'NORMAL' | 'LOW') =>
  ({
    ...base,
    id: randomUUID(),
    type: 'document.uploaded',
    dataschema: 'document.uploaded/v1',
    data: { ...ids, title: 'T', text: 'x', contentType: 'text/plain', uploadedAt: at, ...(priority ? { priority } : {}) },
  }) as ParsedEvent;
const started = (attempt = 1) => ({ ...base, id: randomUUID(), type: 'analysis.started', dataschema: 'analysis.started/v1', data: { ...ids, attempt, startedAt: base.time } }) as ParsedEvent;
const completed = (attempts = 1) =>
  ({
    ...base,
    id: randomUUID(),
    type: 'analysis.completed',
    dataschema: 'analysis.completed/v1',
    data: { ...ids, summary: 's', themes: [], keywords: [], sentiment: { label: 'NEUTRAL', score: 0 }, provider: 'offline', model: 'm', tokens: { prompt: 0, completion: 0 }, attempts, completedAt: '2026-11-28T08:00:05.000Z' },
  }) as ParsedEvent;
const failed = () =>
  ({ ...base, id: randomUUID(), type: 'analysis.failed', dataschema: 'analysis.failed/v1', data: { ...ids, error: { code: 'X', message: 'm' }, attempts: 3, failedAt: '2026-11-28T08:00:09.000Z' } }) as ParsedEvent;

const cancelled = (attempts = 0) =>
  ({
    ...base,
    id: randomUUID(),
    type: 'analysis.cancelled',
    dataschema: 'analysis.cancelled/v1',
    data: { ...ids, attempts, tokens: { prompt: 0, completion: 0 }, cancelledAt: '2026-11-28T08:00:03.000Z' },
  }) as ParsedEvent;

const queued = (): JobState => ({ status: 'QUEUED', attempts: 0, error: null, createdAt: new Date('2026-11-28T08:00:00.000Z'), completedAt: null, progress: null, priority: 'NORMAL' });
const progress = (done: number, total: number) =>
  ({ ...base, id: randomUUID(), type: 'analysis.progress', dataschema: 'analysis.progress/v1', data: { ...ids, done, total, at: '2026-11-28T08:00:02.000Z' } }) as ParsedEvent;

function run(events: ParsedEvent[], state = queued()): JobState {
  for (const event of events) state = applyEvent(state, event) ?? state;
  return state;
}

describe('job transitions', () => {
  it('moves QUEUED → RUNNING → COMPLETED in order', () => {
    expect(run([uploaded(), started()]).status).toBe('RUNNING');
    expect(run([uploaded(), started(), completed()])).toMatchObject({ status: 'COMPLETED', attempts: 1, completedAt: new Date('2026-11-28T08:00:05.000Z') });
  });

  it('never goes backwards when events arrive out of order', () => {
    expect(run([completed(), started(), uploaded()]).status).toBe('COMPLETED');
    expect(run([started(2), started(1)]).attempts).toBe(2);
  });

  it('keeps the first terminal state', () => {
    expect(run([failed(), completed()])).toMatchObject({ status: 'FAILED', error: { code: 'X', message: 'm' }, attempts: 3 });
    expect(run([completed(), failed()]).status).toBe('COMPLETED');
  });

  it('reports a duplicate as no change', () => {
    const state = run([started()]);
    expect(applyEvent(state, started())).toBeNull();
    const done = run([completed()]);
    expect(applyEvent(done, completed())).toBeNull();
  });

  it('takes the creation time from the upload whenever it arrives', () => {
    const state = run([started()], { ...queued(), createdAt: new Date('2026-11-28T09:00:00.000Z') });
    expect(run([uploaded('2026-11-28T07:59:00.000Z')], state).createdAt).toEqual(new Date('2026-11-28T07:59:00.000Z'));
  });

  it('moves progress forward only, while the job runs, and not after it finished', () => {
    const running = run([started(), progress(2, 5), progress(1, 5), progress(2, 5)]);
    expect(running).toMatchObject({ status: 'RUNNING', progress: { done: 2, total: 5 } });
    expect(applyEvent(running, progress(2, 5))).toBeNull();
    // A retry plans again: another total replaces the old progress.
    expect(applyEvent(running, progress(1, 7))?.progress).toEqual({ done: 1, total: 7 });
    const done = run([progress(5, 5), completed()], running);
    expect(done.status).toBe('COMPLETED');
    expect(applyEvent(done, progress(5, 5))).toBeNull();
    // Progress before analysis.started (out of order) still means the job runs.
    expect(run([progress(1, 3)])).toMatchObject({ status: 'RUNNING', progress: { done: 1, total: 3 } });
  });

  it('takes the priority from the upload, NORMAL for an upload written before priorities existed', () => {
    expect(run([uploaded(undefined, 'HIGH')]).priority).toBe('HIGH');
    expect(run([started(), uploaded(undefined, 'LOW')])).toMatchObject({ status: 'RUNNING', priority: 'LOW' });
    expect(applyEvent(run([uploaded(undefined, 'LOW')]), uploaded())?.priority).toBe('NORMAL');
    expect(applyEvent(queued(), uploaded())).toBeNull();
  });

  it('cancels a QUEUED or RUNNING job, with the attempts the cancel reports and when it ended', () => {
    expect(run([uploaded(), cancelled()])).toMatchObject({ status: 'CANCELLED', attempts: 0, error: null, completedAt: new Date('2026-11-28T08:00:03.000Z') });
    expect(run([started(), progress(1, 3), cancelled(1)])).toMatchObject({ status: 'CANCELLED', attempts: 1, progress: { done: 1, total: 3 } });
    // The cancel said how many attempts were started; a later-delivered start does not add to them.
    expect(run([started(1), cancelled(2)]).attempts).toBe(2);
  });

  it('keeps a CANCELLED job as it is, whatever analysis event comes after it, and a finished job is not cancelled', () => {
    const done = run([started(), cancelled(1)]);
    for (const event of [started(2), progress(2, 3), completed(2), failed(), cancelled(3), cancelled(1)]) expect(applyEvent(done, event)).toBeNull();
    // Out of order: the upload still says when the job was created and at which priority.
    expect(applyEvent(done, uploaded('2026-11-28T07:59:00.000Z', 'HIGH'))).toMatchObject({ status: 'CANCELLED', priority: 'HIGH' });
    expect(applyEvent(run([completed()]), cancelled())).toBeNull();
    expect(applyEvent(run([failed()]), cancelled())).toBeNull();
  });
});
