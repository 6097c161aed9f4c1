import type { ParsedEvent } from '@tributary/contracts';
import { parse } from '@tributary/contracts';
import { publish, type NewEvent } from '@tributary/core/events';
import { createLogger } from '@tributary/core';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import type { Database } from '@tributary/core/db';
import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Job, migrations } from '../src/entities.ts';
import { updateViews, uuidTime } from '../src/service.ts';

const available = await servicesAvailable();
const log = createLogger({ service: 'test', level: 'silent' });
const TENANT = 'tenant-a';

function event(type: string, data: Record<string, unknown>): ParsedEvent {
  return parse(
    JSON.stringify({ id: randomUUID(), type, source: 'test', specversion: '1.0', time: new Date().toISOString(), dataschema: `${type}/v1`, subject: data.documentId, tenantid: TENANT, data }),
  );
}
const uploaded = (jobId: string, documentId: string) =>
  event('document.uploaded', { jobId, documentId, title: 'T', text: 'Some text.', contentType: 'text/plain', uploadedAt: uuidTime(jobId)! });
const started = (jobId: string, documentId: string) => event('analysis.started', { jobId, documentId, attempt: 1, startedAt: new Date().toISOString() });

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
      updateViews(events, { em, publish: (e: readonly NewEvent[]) => publish(em, 'jobs', e).then(() => undefined), log, attempt: 1, lastAttempt: false }),
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
});
