/**
 * An upload whose process dies between its commit and its answer, retried with the same
 * Idempotency-Key, gets the first attempt's document and job, and nothing is stored or published
 * twice. The documents service as its own process on PostgreSQL and RabbitMQ, SIGKILLed by itself
 * right after the commit (TRIBUTARY_TEST_EXIT_AFTER_COMMIT, honoured only with NODE_ENV=test),
 * then started again on the same database; called as the gateway calls it (signed identity with
 * the key).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteNamespace } from '@tributary/core/events';
import { dropDatabase, openDatabase, queryRows, type Database } from '@tributary/core/db';
import { createLogger } from '@tributary/core/log';
import { signIdentity } from '@tributary/core/identity';
import { Document, migrations } from '../src/entities.ts';
import { brokerQueues, freePort, servicesAvailable, stopProcesses, TEST_AMQP_URL, TEST_DATABASE_URL, testNamespace, waitFor } from '@tributary/core/testing';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id title } job { id status } } }';
const identity = { tenantId: 'tenant-a', userId: 'user-1' };

describe.skipIf(!(await servicesAvailable()))('an upload retried after the documents process died past its commit', () => {
  const namespace = testNamespace('idem');
  const dbName = `tributary_${namespace}_documents`;
  const secret = randomBytes(32).toString('base64url');
  const database = new URL(TEST_DATABASE_URL);
  database.pathname = `/${dbName}`;
  let port: number;
  let url: string;
  const children: ChildProcess[] = [];

  const start = async (env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'subgraphs/documents/src/main.ts'], {
      cwd: root,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        PORT: String(port),
        DOCUMENTS_DATABASE_URL: database.toString(),
        AMQP_URL: TEST_AMQP_URL,
        TRIBUTARY_NAMESPACE: namespace,
        INTERNAL_SIGNING_SECRET: secret,
        ...env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(child);
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`documents exited with ${child.exitCode}`);
        return fetch(new URL('/ready', url)).then((r) => r.status === 200, () => false);
      },
      60_000,
      'documents to be ready',
    );
    return child;
  };
  const upload = (input: Record<string, unknown>, key: string) =>
    fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(secret, { ...identity, idempotencyKey: key }) },
      body: JSON.stringify({ query: UPLOAD, variables: { input } }),
    });
  let db: Database;
  const rows = <R extends object>(sql: string): Promise<R[]> => queryRows<R>(db.fork(), sql);
  const count = async (sql: string) => Number((await rows<{ n: string }>(sql))[0]!.n);

  beforeAll(async () => {
    port = await freePort();
    url = `http://127.0.0.1:${port}/graphql`;
    // The service's own database, created and migrated as the service does it, for the test to look into.
    const logger = createLogger({ service: 'test', level: 'silent' });
    db = await openDatabase({ service: 'documents', target: { kind: 'postgres', url: database.toString(), dbName }, entities: [Document], migrations, logger, poolSize: 1 });
  });
  afterAll(async () => {
    await stopProcesses(children.filter((c) => c.exitCode === null && c.signalCode === null));
    await db?.close();
    await deleteNamespace(TEST_AMQP_URL, namespace, await brokerQueues(`${namespace}.`)).catch(() => {});
    await dropDatabase(TEST_DATABASE_URL, dbName).catch(() => {});
  }, 60_000);

  it('answers the retry with the same key with the document and job of the first attempt, storing and publishing nothing more', async () => {
    const input = { title: 'Harbour report', content: 'Container volumes at the harbour rose for the third quarter running.' };
    const key = `upload-${randomBytes(8).toString('hex')}`;

    const doomed = await start({ TRIBUTARY_TEST_EXIT_AFTER_COMMIT: '1' });
    const exited = once(doomed, 'exit');
    // The answer never comes: the process is gone right after its commit.
    await expect(upload(input, key)).rejects.toThrow();
    const [, signal] = await exited;
    expect(signal).toBe('SIGKILL');
    expect(await count('select count(*) as n from documents')).toBe(1);
    expect(await count('select count(*) as n from tributary_outbox')).toBe(1);
    const [stored] = await rows<{ id: string; job_id: string }>('select id, job_id from documents');

    await start();
    const retry = await upload(input, key);
    const body = (await retry.json()) as { data?: any; errors?: unknown };
    expect(retry.status, JSON.stringify(body)).toBe(200);
    expect(body.errors).toBeUndefined();
    expect(body.data.uploadDocument.job.id).toBe(stored!.job_id);
    expect(body.data.uploadDocument.document).toEqual({ id: stored!.id, title: 'Harbour report' });
    expect(body.data.uploadDocument.job.status).toBe('QUEUED');
    expect(await count('select count(*) as n from documents')).toBe(1);
    expect(await count('select count(*) as n from tributary_outbox')).toBe(1);

    // The same key with another body: refused, 422, nothing stored.
    const reused = await upload({ ...input, content: 'Another text altogether.' }, key);
    const refused = (await reused.json()) as { errors?: { extensions?: { code?: string } }[] };
    expect(reused.status).toBe(422);
    expect(refused.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
    expect(await count('select count(*) as n from documents')).toBe(1);
  }, 180_000);
});
