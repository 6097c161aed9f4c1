import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, queryRows, queryRun, type Database } from '../src/db/index.ts';
import { idempotencyScope, idempotent, pruneIdempotencyKeys, requestHash } from '../src/idempotency.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { servicesAvailable } from '../src/testing/services.ts';
import { silent } from './fixtures/harness.ts';

const scope = idempotencyScope('tenant-a', 'user-1', 'uploadDocument');
let keys = 0;
const newKey = () => `key-${Date.now()}-${keys++}`;

/** A promise and the function that settles it. */
function latch(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

async function rows(db: Database, key: string): Promise<number> {
  const [row] = await queryRows<{ n: string }>(db.fork(), 'select count(*) as n from tributary_idempotency where scope = ? and key = ?', [scope, key]);
  return Number(row!.n);
}

describe.skipIf(!(await servicesAvailable()))('idempotent() on PostgreSQL', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  beforeAll(async () => {
    db = await openTestDatabase(target, { logger: silent });
  });
  afterAll(async () => {
    await db?.close();
    await dropTestDatabase(target);
  });

  it('runs the work once for two concurrent transactions with one key and one body, and answers both with its response', async () => {
    const key = newKey();
    const hash = requestHash({ title: 't', content: 'c' });
    let runs = 0;
    const inserted = latch();
    const release = latch();
    const first = db.fork().transactional((tx) =>
      idempotent(tx, { scope, key, requestHash: hash }, async () => {
        runs++;
        inserted.open();
        await release.promise;
        return { documentId: 'doc-1', jobId: 'job-1' };
      }),
    );
    await inserted.promise;
    // The second's insert waits on the first's uncommitted row.
    const second = db.fork().transactional((tx) =>
      idempotent(tx, { scope, key, requestHash: hash }, async () => {
        runs++;
        return { documentId: 'doc-2', jobId: 'job-2' };
      }),
    );
    await new Promise((r) => setTimeout(r, 300));
    release.open();
    const [a, b] = await Promise.all([first, second]);
    expect(a).toEqual({ replayed: false, response: { documentId: 'doc-1', jobId: 'job-1' } });
    expect(b).toEqual({ replayed: true, response: { documentId: 'doc-1', jobId: 'job-1' } });
    expect(runs).toBe(1);
    expect(await rows(db, key)).toBe(1);
  });

  it('refuses the key with another body as IDEMPOTENCY_KEY_REUSED, and the same key in another scope is another key', async () => {
    const key = newKey();
    await db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: requestHash({ title: 'a' }) }, async () => ({ id: 1 })));
    await expect(db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: requestHash({ title: 'b' }) }, async () => ({ id: 2 })))).rejects.toMatchObject({
      extensions: { code: 'IDEMPOTENCY_KEY_REUSED' },
    });
    const otherUser = idempotencyScope('tenant-a', 'user-2', 'uploadDocument');
    const other = await db.fork().transactional((tx) => idempotent(tx, { scope: otherUser, key, requestHash: requestHash({ title: 'b' }) }, async () => ({ id: 3 })));
    expect(other).toEqual({ replayed: false, response: { id: 3 } });
  });

  it('lets a retry do the work when the first transaction rolled back', async () => {
    const key = newKey();
    const hash = requestHash({ title: 'x' });
    await expect(
      db.fork().transactional(async (tx) => {
        await idempotent(tx, { scope, key, requestHash: hash }, async () => ({ id: 1 }));
        throw new Error('the write after it failed');
      }),
    ).rejects.toThrow('the write after it failed');
    expect(await rows(db, key)).toBe(0);
    const retry = await db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: hash }, async () => ({ id: 2 })));
    expect(retry).toEqual({ replayed: false, response: { id: 2 } });
  });

  it('tells a retry IDEMPOTENCY_KEY_IN_USE with a retry hint when the first is still running past the wait', async () => {
    const key = newKey();
    const hash = requestHash({ title: 'slow' });
    const inserted = latch();
    const release = latch();
    const first = db.fork().transactional((tx) =>
      idempotent(tx, { scope, key, requestHash: hash }, async () => {
        inserted.open();
        await release.promise;
        return { id: 1 };
      }),
    );
    await inserted.promise;
    await expect(db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: hash, waitMs: 200 }, async () => ({ id: 2 })))).rejects.toMatchObject({
      extensions: { code: 'IDEMPOTENCY_KEY_IN_USE', retryAfterSeconds: 1 },
    });
    release.open();
    await first;
    const later = await db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: hash }, async () => ({ id: 3 })));
    expect(later).toEqual({ replayed: true, response: { id: 1 } });
  });

  it('prunes keys past their TTL, and takes over an expired key the prune has not reached yet', async () => {
    const old = newKey();
    const expired = newKey();
    const fresh = newKey();
    for (const key of [old, expired, fresh]) await db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: 'h1' }, async () => ({ key })));
    await queryRun(db.fork(), "update tributary_idempotency set created_at = now() - interval '25 hours' where key = any(?)", [[old, expired]]);
    const taken = await db.fork().transactional((tx) => idempotent(tx, { scope, key: expired, requestHash: 'h2' }, async () => ({ again: true })));
    expect(taken).toEqual({ replayed: false, response: { again: true } });
    expect(await pruneIdempotencyKeys(db.fork(), 24)).toBeGreaterThanOrEqual(1);
    expect(await rows(db, old)).toBe(0);
    expect(await rows(db, expired)).toBe(1);
    expect(await rows(db, fresh)).toBe(1);
  });

  it('refuses to run outside a transaction', async () => {
    await expect(idempotent(db.fork(), { scope, key: newKey(), requestHash: 'h' }, async () => 1)).rejects.toMatchObject({ code: 'IDEMPOTENCY_NO_TRANSACTION' });
  });
});

describe('idempotent() on PGlite (one connection)', () => {
  let db: Database;
  beforeAll(async () => {
    db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], migrations: [], logger: silent });
  });
  afterAll(async () => {
    await db?.close();
  });

  it('queues a concurrent second request behind the first, without a deadlock, and replays its response', async () => {
    const key = newKey();
    let runs = 0;
    const attempt = (id: number) =>
      db.fork().transactional((tx) =>
        idempotent(tx, { scope, key, requestHash: 'same' }, async () => {
          runs++;
          await new Promise((r) => setTimeout(r, 100));
          return { id };
        }),
      );
    const [a, b] = await Promise.all([attempt(1), attempt(2)]);
    expect(runs).toBe(1);
    expect(a.response).toEqual(b.response);
    expect([a.replayed, b.replayed].sort()).toEqual([false, true]);
    await expect(db.fork().transactional((tx) => idempotent(tx, { scope, key, requestHash: 'other' }, async () => ({ id: 3 })))).rejects.toMatchObject({
      extensions: { code: 'IDEMPOTENCY_KEY_REUSED' },
    });
  });
});
