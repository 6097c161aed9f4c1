/**
 * A job's priority at upload: taken from `UploadDocumentInput.priority` (NORMAL by default), for
 * text and file uploads alike, stored with the document, carried by `document.uploaded` and
 * answered as `Job.priority`; part of the request an Idempotency-Key stands for. The documents
 * service in this process on PostgreSQL (its bus in memory: what it publishes is read from its
 * outbox), called as the gateway calls it (signed identity).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@tributary/core/log';
import { queryRows, queryRun } from '@tributary/core/db';
import { signIdentity } from '@tributary/core/identity';
import { startService, type RunningService } from '@tributary/core/service';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import { Document, migrations } from '../src/entities.ts';
import { documentsService } from '../src/service.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id job { id priority } } job { id status priority } } }';
const JOB = 'query($id: ID!) { job(id: $id) { id priority document { id } } }';
const identity = { tenantId: 'tenant-a', userId: 'user-1' };
const silent = createLogger({ service: 'test', level: 'silent' });

interface Answer {
  status: number;
  data?: any;
  errors?: { message: string; extensions?: { code?: string } }[];
}

describe.skipIf(!(await servicesAvailable()))('job priorities at upload', () => {
  const target = randomDatabaseTarget();
  const secret = randomBytes(32).toString('base64url');
  let service: RunningService;
  let base: URL;

  beforeAll(async () => {
    service = await startService(documentsService, {
      env: { DOCUMENTS_DATABASE_URL: `${target.url.replace(/\/[^/]*$/, '')}/${target.dbName}`, INTERNAL_SIGNING_SECRET: secret, LOG_LEVEL: 'silent', NODE_ENV: 'test' },
      port: 0,
      host: '127.0.0.1',
      logger: silent,
    });
    base = new URL(service.url);
  });
  afterAll(async () => {
    await service?.stop();
    await dropTestDatabase(target);
  });

  const graphql = async (query: string, variables: Record<string, unknown>, key?: string): Promise<Answer> => {
    const response = await fetch(base, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(secret, key === undefined ? identity : { ...identity, idempotencyKey: key }) },
      body: JSON.stringify({ query, variables }),
    });
    return { status: response.status, ...((await response.json()) as Omit<Answer, 'status'>) };
  };
  const upload = (input: Record<string, unknown>, key?: string) => graphql(UPLOAD, { input }, key);
  /** Stages a file as the gateway does (POST /uploads) and returns its reference. */
  const stage = async (text: string, name = 'notes.txt'): Promise<string> => {
    const response = await fetch(new URL('/uploads', base), { method: 'POST', headers: { 'x-file-name': name, ...signIdentity(secret, identity) }, body: text });
    expect(response.status).toBe(201);
    return ((await response.json()) as { ref: string }).ref;
  };
  /** The data of the document.uploaded the service wrote for a document. */
  const uploadedEvent = async (documentId: string) => {
    const rows = await queryRows<{ payload: string }>(service.db.fork(), `select payload from tributary_outbox where type = 'document.uploaded'`);
    const events = rows.map((r) => JSON.parse(r.payload) as { data: { documentId: string; priority?: string } }).filter((e) => e.data.documentId === documentId);
    expect(events).toHaveLength(1);
    return events[0]!.data;
  };
  const count = async (sql: string, params: unknown[] = []) => Number((await queryRows<{ n: string }>(service.db.fork(), sql, params))[0]!.n);

  it('queues a job at the priority asked for, stores it and puts it in document.uploaded', async () => {
    for (const priority of ['HIGH', 'NORMAL', 'LOW']) {
      const answer = await upload({ title: `At ${priority}`, content: 'Freight volumes rose in the third quarter.', priority });
      expect(answer.errors).toBeUndefined();
      const { document, job } = answer.data.uploadDocument;
      expect(job).toEqual({ id: document.job.id, status: 'QUEUED', priority });
      expect(document.job.priority).toBe(priority);
      expect((await uploadedEvent(document.id)).priority).toBe(priority);
      const read = await graphql(JOB, { id: job.id });
      expect(read.data.job).toEqual({ id: job.id, priority, document: { id: document.id } });
    }
  });

  it('takes NORMAL when no priority is given, or null', async () => {
    for (const input of [{ title: 'No priority', content: 'Text.' }, { title: 'Null priority', content: 'Text.', priority: null }]) {
      const answer = await upload(input);
      expect(answer.errors).toBeUndefined();
      expect(answer.data.uploadDocument.job.priority).toBe('NORMAL');
      expect((await uploadedEvent(answer.data.uploadDocument.document.id)).priority).toBe('NORMAL');
    }
  });

  it('refuses a priority that is not one of HIGH, NORMAL and LOW, storing nothing', async () => {
    const before = await count('select count(*) as n from documents');
    const answer = await upload({ title: 'Urgent', content: 'Text.', priority: 'URGENT' });
    expect(answer.status).toBe(400);
    expect(answer.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(await count('select count(*) as n from documents')).toBe(before);
  });

  it('gives a file upload its priority too', async () => {
    const answer = await upload({ title: 'A file at LOW', file: await stage('Quarterly notes: exports grew, imports fell.'), priority: 'LOW' });
    expect(answer.errors).toBeUndefined();
    expect(answer.data.uploadDocument.job.priority).toBe('LOW');
    expect((await uploadedEvent(answer.data.uploadDocument.document.id)).priority).toBe('LOW');
  });

  it('counts the priority as part of the request of an Idempotency-Key: another priority is IDEMPOTENCY_KEY_REUSED', async () => {
    const input = { title: 'Harbour report', content: 'Container volumes rose again.', priority: 'HIGH' };
    const key = `k-${randomUUID()}`;
    const first = await upload(input, key);
    expect(first.errors).toBeUndefined();
    const retry = await upload(input, key);
    expect(retry.data).toEqual(first.data);
    for (const priority of ['LOW', 'NORMAL', null]) {
      const reused = await upload({ ...input, priority }, key);
      expect(reused.status).toBe(422);
      expect(reused.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
    }
    expect(await count('select count(*) as n from documents where title = ?', ['Harbour report'])).toBe(1);

    // NORMAL is the default: said or not, it is the same request.
    const plain = { title: 'Plain report', content: 'Nothing unusual.' };
    const normalKey = `k-${randomUUID()}`;
    const implicit = await upload(plain, normalKey);
    const explicit = await upload({ ...plain, priority: 'NORMAL' }, normalKey);
    expect(explicit.data).toEqual(implicit.data);
    expect(explicit.data.uploadDocument.job.priority).toBe('NORMAL');

    // A file: the same bytes staged again under the same key with another priority.
    const fileKey = `k-${randomUUID()}`;
    const text = 'Minutes of the board meeting: the budget was approved.';
    const firstFile = await upload({ title: 'Minutes', file: await stage(text), priority: 'LOW' }, fileKey);
    expect(firstFile.errors).toBeUndefined();
    const sameFile = await upload({ title: 'Minutes', file: await stage(text), priority: 'LOW' }, fileKey);
    expect(sameFile.data).toEqual(firstFile.data);
    const otherPriority = await upload({ title: 'Minutes', file: await stage(text), priority: 'HIGH' }, fileKey);
    expect(otherPriority.status).toBe(422);
    expect(otherPriority.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
  });

  it('reads documents uploaded before priorities existed as NORMAL', async () => {
    // The database as the release before this one left it: the first two migrations only.
    const old = randomDatabaseTarget();
    const before = await openTestDatabase(old, { migrations: migrations.slice(0, 2), logger: silent, poolSize: 1 });
    const id = randomUUID();
    try {
      await queryRun(
        before.fork(),
        `insert into documents (id, tenant_id, title, content, text, content_type, size, job_id, uploaded_by, created_at) values (?, 'tenant-a', 'Old', 'Old text.', 'Old text.', 'text/plain', 9, ?, null, now())`,
        [id, randomUUID()],
      );
      await before.close();
      const after = await openTestDatabase(old, { entities: [Document], migrations, logger: silent, poolSize: 1 });
      const [row] = await queryRows<{ priority: string }>(after.fork(), 'select priority from documents where id = ?', [id]);
      expect(row?.priority).toBe('NORMAL');
      expect((await after.fork().findOneOrFail(Document, { id })).priority).toBe('NORMAL');
      await after.close();
    } finally {
      await before.close().catch(() => {});
      await dropTestDatabase(old);
    }
  });
});
