import type { ParsedEvent } from '@tributary/contracts';
import { parse } from '@tributary/contracts';
import { publish, type NewEvent } from '@tributary/core/events';
import { createLogger } from '@tributary/core';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import type { Database } from '@tributary/core/db';
import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queryRows, queryRun } from '@tributary/core/db';
import { signIdentity } from '@tributary/core/identity';
import { startService } from '@tributary/core/service';
import { Job, migrations } from '../src/entities.ts';
import { jobsService, updateViews, uuidTime } from '../src/service.ts';

const available = await servicesAvailable();
const log = createLogger({ service: 'test', level: 'silent' });
const TENANT = 'tenant-a';

function event(type: string, data: Record<string, unknown>): ParsedEvent {
  return parse(
    JSON.stringify({ id: randomUUID(), type, source: 'test', specversion: '1.0', time: new Date().toISOString(), dataschema: `${type}/v1`, subject: data.documentId, tenantid: TENANT, data }),
  );
}
const uploaded = (jobId: string, documentId: string, priority?: string) =>
  event('document.uploaded', { jobId, documentId, title: 'T', text: 'Some text.', contentType: 'text/plain', uploadedAt: uuidTime(jobId)!, ...(priority ? { priority } : {}) });
const started = (jobId: string, documentId: string) => event('analysis.started', { jobId, documentId, attempt: 1, startedAt: new Date().toISOString() });
const cancelled = (jobId: string, documentId: string, attempts: number, cancelledAt = new Date().toISOString()) =>
  event('analysis.cancelled', { jobId, documentId, attempts, tokens: { prompt: 120, completion: 0 }, cancelledAt });
const completed = (jobId: string, documentId: string) =>
  event('analysis.completed', {
    jobId,
    documentId,
    summary: 's',
    themes: [],
    keywords: [],
    sentiment: { label: 'NEUTRAL', score: 0 },
    provider: 'offline',
    model: 'm',
    tokens: { prompt: 1, completion: 1 },
    attempts: 2,
    completedAt: new Date().toISOString(),
  });

describe.skipIf(!available)('the job view on PostgreSQL', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  beforeAll(async () => {
    db = await openTestDatabase(target, { entities: [Job], migrations, logger: log, poolSize: 4 });
  });
  afterAll(async () => {
    await db?.close();
    await dropTestDatabase(target);
  });

  const apply = (events: ParsedEvent[]) =>
    db.fork().transactional((em) =>
      updateViews(events, { em, publish: (e: readonly NewEvent[]) => publish(em, 'jobs', e).then(() => undefined), log, attempt: 1, lastAttempt: false, afterTransaction: () => {} }),
    );

  it('applies concurrent batches over the same jobs in opposite orders without a deadlock', async () => {
    for (let round = 0; round < 20; round++) {
      const jobs = Array.from({ length: 40 }, () => ({ jobId: uuidv7(), documentId: randomUUID() }));
      const forwards = jobs.map((j) => uploaded(j.jobId, j.documentId));
      const backwards = [...jobs].reverse().map((j) => started(j.jobId, j.documentId));
      // Both batches create rows and lock them: in delivery order, these two would wait on each other.
      await Promise.all([apply(forwards), apply(backwards)]);
      const rows = await db.fork().execute<{ status: string; n: string }[]>(`select status, count(*) as n from jobs where id in (${jobs.map((j) => `'${j.jobId}'`).join(', ')}) group by status`);
      expect(rows).toEqual([{ status: 'RUNNING', n: '40' }]);
    }
  });

  it('announces a job it creates with the state stored for it, whether the batch created it or found it', async () => {
    const fresh = { jobId: uuidv7(), documentId: randomUUID() };
    const known = { jobId: uuidv7(), documentId: randomUUID() };
    await apply([started(known.jobId, known.documentId)]);
    const before = Number((await db.fork().execute<{ n: string }[]>(`select count(*) as n from tributary_outbox where type = 'job.updated'`))[0]!.n);
    // One batch: a job new to the view (its row inserted, not read back) and one it already had.
    await apply([uploaded(fresh.jobId, fresh.documentId), uploaded(known.jobId, known.documentId)]);
    const announced = (await db.fork().execute<{ payload: string }[]>(`select payload from tributary_outbox where type = 'job.updated' order by id offset ${before}`)).map((r) => JSON.parse(r.payload).data);
    expect(announced).toEqual([
      expect.objectContaining({ jobId: fresh.jobId, documentId: fresh.documentId, status: 'QUEUED', attempts: 0, error: null, createdAt: uuidTime(fresh.jobId), completedAt: null, progress: null }),
    ]);
    const [row] = await db.fork().execute<{ status: string; attempts: number; created_at: Date | string; tenant_id: string }[]>(`select status, attempts, created_at, tenant_id from jobs where id = '${fresh.jobId}'`);
    expect({ ...row, created_at: new Date(row!.created_at).toISOString() }).toEqual({ status: 'QUEUED', attempts: 0, created_at: uuidTime(fresh.jobId), tenant_id: TENANT });
    const [other] = await db.fork().execute<{ status: string }[]>(`select status from jobs where id = '${known.jobId}'`);
    expect(other!.status).toBe('RUNNING');
  });

  it('announces each job once per batch, with its last state', async () => {
    const { jobId, documentId } = { jobId: uuidv7(), documentId: randomUUID() };
    const before = Number((await db.fork().execute<{ n: string }[]>(`select count(*) as n from tributary_outbox where type = 'job.updated'`))[0]!.n);
    await apply([uploaded(jobId, documentId), started(jobId, documentId)]);
    const announced = await db.fork().execute<{ payload: string }[]>(`select payload from tributary_outbox where type = 'job.updated' order by id offset ${before}`);
    expect(announced.map((r) => JSON.parse(r.payload).data)).toEqual([expect.objectContaining({ jobId, status: 'RUNNING', attempts: 1 })]);
  });

  /** job.updated data the view announced since `since` (an outbox row count). */
  const announcedSince = async (since: number) =>
    (await db.fork().execute<{ payload: string }[]>(`select payload from tributary_outbox where type = 'job.updated' order by id offset ${since}`)).map((r) => JSON.parse(r.payload).data);
  const announcements = async () => Number((await db.fork().execute<{ n: string }[]>(`select count(*) as n from tributary_outbox where type = 'job.updated'`))[0]!.n);
  const stored = async (jobId: string) =>
    (await queryRows<{ status: string; attempts: number; priority: string; completed_at: Date | string | null }>(db.fork(), 'select status, attempts, priority, completed_at from jobs where id = ?', [jobId]))[0];

  it('stores the priority of the upload, NORMAL until the upload is seen', async () => {
    const high = { jobId: uuidv7(), documentId: randomUUID() };
    const late = { jobId: uuidv7(), documentId: randomUUID() };
    const old = { jobId: uuidv7(), documentId: randomUUID() };
    await apply([uploaded(high.jobId, high.documentId, 'HIGH'), started(late.jobId, late.documentId), uploaded(old.jobId, old.documentId)]);
    expect((await stored(high.jobId))?.priority).toBe('HIGH');
    expect((await stored(late.jobId))?.priority).toBe('NORMAL');
    expect((await stored(old.jobId))?.priority).toBe('NORMAL');
    await apply([uploaded(late.jobId, late.documentId, 'LOW')]);
    expect(await stored(late.jobId)).toMatchObject({ status: 'RUNNING', priority: 'LOW' });
  });

  it('folds analysis.cancelled into CANCELLED, announces it once, and changes nothing for any analysis event after it', async () => {
    const queuedJob = { jobId: uuidv7(), documentId: randomUUID() };
    const runningJob = { jobId: uuidv7(), documentId: randomUUID() };
    await apply([uploaded(queuedJob.jobId, queuedJob.documentId, 'LOW'), uploaded(runningJob.jobId, runningJob.documentId), started(runningJob.jobId, runningJob.documentId)]);
    const at = '2026-11-28T08:00:03.000Z';
    const before = await announcements();
    await apply([cancelled(queuedJob.jobId, queuedJob.documentId, 0, at), cancelled(runningJob.jobId, runningJob.documentId, 1, at)]);
    const announced = await announcedSince(before);
    expect(announced).toHaveLength(2);
    expect(announced).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ jobId: queuedJob.jobId, status: 'CANCELLED', attempts: 0, error: null, completedAt: at }),
        expect.objectContaining({ jobId: runningJob.jobId, status: 'CANCELLED', attempts: 1, error: null, completedAt: at }),
      ]),
    );
    expect(await stored(queuedJob.jobId)).toMatchObject({ status: 'CANCELLED', attempts: 0, priority: 'LOW' });

    // Whatever comes later (a start, a completion, the cancel again) changes nothing and announces nothing.
    const after = await announcements();
    await apply([started(runningJob.jobId, runningJob.documentId), completed(runningJob.jobId, runningJob.documentId), cancelled(runningJob.jobId, runningJob.documentId, 5)]);
    expect(await announcements()).toBe(after);
    const row = await stored(runningJob.jobId);
    expect({ ...row, completed_at: new Date(row!.completed_at!).toISOString() }).toEqual({ status: 'CANCELLED', attempts: 1, priority: 'NORMAL', completed_at: at });
  });

  it('does not cancel a job that already ended', async () => {
    const job = { jobId: uuidv7(), documentId: randomUUID() };
    await apply([uploaded(job.jobId, job.documentId), completed(job.jobId, job.documentId)]);
    const before = await announcements();
    await apply([cancelled(job.jobId, job.documentId, 1)]);
    expect(await announcements()).toBe(before);
    expect((await stored(job.jobId))?.status).toBe('COMPLETED');
  });

  it('answers jobs(status: CANCELLED) with the cancelled jobs and their priority', async () => {
    const secret = 'jobs-view-test-secret-jobs-view-test-0123';
    const service = await startService(jobsService, {
      env: { JOBS_DATABASE_URL: `${target.url.replace(/\/[^/]*$/, '')}/${target.dbName}`, INTERNAL_SIGNING_SECRET: secret, LOG_LEVEL: 'silent' },
      port: 0,
      host: '127.0.0.1',
      logger: log,
    });
    try {
      const job = { jobId: uuidv7(), documentId: randomUUID() };
      await apply([uploaded(job.jobId, job.documentId, 'HIGH'), cancelled(job.jobId, job.documentId, 0)]);
      const query = async (status: string) => {
        const response = await fetch(service.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...signIdentity(secret, { tenantId: TENANT, userId: 'u' }) },
          body: JSON.stringify({ query: 'query($status: JobStatus) { jobs(status: $status, first: 100) { edges { node { id status priority completedAt } } } }', variables: { status } }),
        });
        const body = (await response.json()) as { data?: { jobs: { edges: { node: { id: string; status: string; priority: string } }[] } }; errors?: unknown };
        expect(body.errors).toBeUndefined();
        return body.data!.jobs.edges.map((e) => e.node);
      };
      const listed = await query('CANCELLED');
      expect(listed.length).toBeGreaterThan(0);
      expect(listed.every((j) => j.status === 'CANCELLED')).toBe(true);
      expect(listed).toContainEqual(expect.objectContaining({ id: job.jobId, status: 'CANCELLED', priority: 'HIGH' }));
      expect((await query('QUEUED')).map((j) => j.id)).not.toContain(job.jobId);
    } finally {
      await service.stop();
    }
  });

  it('keeps the jobs of a view from before work control, NORMAL, and takes CANCELLED after the migration', async () => {
    const old = randomDatabaseTarget();
    const before = await openTestDatabase(old, { migrations: migrations.slice(0, 2), logger: log, poolSize: 1 });
    const jobId = uuidv7();
    try {
      await queryRun(before.fork(), `insert into jobs (id, tenant_id, document_id, status, attempts, created_at, updated_at) values (?, ?, 'doc', 'RUNNING', 1, now(), now())`, [jobId, TENANT]);
      await expect(queryRun(before.fork(), `update jobs set status = 'CANCELLED' where id = ?`, [jobId])).rejects.toThrow();
      await before.close();
      const after = await openTestDatabase(old, { entities: [Job], migrations, logger: log, poolSize: 1 });
      try {
        await queryRun(after.fork(), `update jobs set status = 'CANCELLED' where id = ?`, [jobId]);
        expect(await queryRows(after.fork(), 'select status, priority from jobs where id = ?', [jobId])).toEqual([{ status: 'CANCELLED', priority: 'NORMAL' }]);
        await expect(queryRun(after.fork(), `update jobs set priority = 'URGENT' where id = ?`, [jobId])).rejects.toThrow();
      } finally {
        await after.close();
      }
    } finally {
      await before.close().catch(() => {});
      await dropTestDatabase(old);
    }
  });
});
