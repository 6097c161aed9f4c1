/**
 * The rate-limit stores on real services: the contract (as the memory store's in
 * rate-limit.test.ts) on PostgreSQL, a random database per test, and on Redis, a key prefix per
 * test, each over two handles as over two processes; then what only one of them does (the SQL
 * store's pause reads, the Redis store's keys and scripts). With CI=true a missing service fails.
 */
import { Redis } from 'ioredis';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import type { Database } from '../src/db/index.ts';
import { rateLimitTablesMigration, RedisRateLimitStore, SqlRateLimitStore, type SqlRateLimitTables } from '../src/rate-limit/index.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { freePort, redisAvailable, servicesAvailable, TEST_REDIS_URL, waitFor } from '../src/testing/services.ts';
import { describeRateLimitContract } from './rate-limit-contract.ts';

const TABLES: SqlRateLimitTables = { calls: 'test_rate_calls', pauses: 'test_rate_pauses', lock: 'tributary-test-rate' };
const migrations = [{ name: 'test-0001-rate-limits', class: rateLimitTablesMigration(TABLES) }];
const postgres = await servicesAvailable();
const redis = await redisAvailable();
/** Whether a Redis of a test's own can be started; as {@link redisAvailable}, a failure with CI=true. */
const redisServer = ((): boolean => {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('CI=true but redis-server is not installed: the Redis rate-limit tests cannot run');
  console.warn('skipping a Redis rate-limit test: no redis-server');
  return false;
})();
const testPrefix = () => `tributary-test:${randomUUID().slice(0, 8)}:rate`;
const NONE = { requests: 0, cost: 0, windowMs: 60_000 };

/** Deletes every key under `prefix`. */
async function dropKeys(prefix: string): Promise<void> {
  const admin = new Redis(TEST_REDIS_URL);
  try {
    const keys = await admin.keys(`${prefix}:*`);
    if (keys.length > 0) await admin.del(...keys);
  } finally {
    await admin.quit();
  }
}

describeRateLimitContract('PostgreSQL', postgres, async () => {
  const target = randomDatabaseTarget('tributary_rate');
  const dbs: Database[] = [];
  for (let i = 0; i < 2; i++) dbs.push(await openTestDatabase(target, { migrations, poolSize: 4 }));
  return {
    stores: [new SqlRateLimitStore(dbs[0]!, TABLES), new SqlRateLimitStore(dbs[1]!, TABLES)],
    close: async () => {
      for (const db of dbs) await db.close();
      await dropTestDatabase(target);
    },
  };
});

describeRateLimitContract('Redis', redis, async () => {
  const prefix = testPrefix();
  const stores = [new RedisRateLimitStore(new Redis(TEST_REDIS_URL), prefix), new RedisRateLimitStore(new Redis(TEST_REDIS_URL), prefix)] as const;
  return {
    stores,
    close: async () => {
      await dropKeys(prefix);
      for (const store of stores) await store.close();
    },
  };
});

/** Counts the statements `db`'s pool runs and those on connections of the caller's own. */
function countStatements(db: Database) {
  const counts = { pooled: 0, own: 0, connections: 0 };
  // Every fork's statements go through the driver's one connection object: count them there.
  const connection = db.fork().getConnection();
  const execute = connection.execute.bind(connection);
  connection.execute = ((...args: Parameters<typeof execute>) => {
    counts.pooled++;
    return execute(...args);
  }) as typeof connection.execute;
  const connect = db.connect.bind(db);
  db.connect = async () => {
    counts.connections++;
    const client = await connect();
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      counts.own++;
      return query(...args);
    };
    return client;
  };
  return counts;
}

describe.skipIf(!postgres)('the SQL store without limits', () => {
  it('reads the pauses on a connection of its own, one read shared by the calls that ask at once, and holds them all for a pause', async () => {
    const target = randomDatabaseTarget('tributary_rate');
    const db = await openTestDatabase(target, { migrations, poolSize: 1 });
    let release: (() => void) | undefined;
    try {
      const counts = countStatements(db);
      const store = new SqlRateLimitStore(db, TABLES);
      // The pool's one connection is held by a transaction for the whole wave: the reads must not need it.
      const held = db.fork().transactional(async (em) => {
        await em.getConnection().execute('select 1', [], 'all', em.getTransactionContext());
        await new Promise<void>((resolve) => (release = resolve));
      });
      await vi.waitFor(() => expect(release).toBeTypeOf('function'));
      const before = counts.pooled;
      const wave = await Promise.race([
        Promise.all(Array.from({ length: 32 }, () => store.tryAcquire('shared', 0, NONE))),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the pause reads waited for the pool')), 5_000)),
      ]);
      expect(wave.every((a) => a.ok)).toBe(true);
      expect({ pooled: counts.pooled - before, own: counts.own, connections: counts.connections }).toEqual({ pooled: 0, own: 1, connections: 1 });
      release!();
      await held;

      await store.pause('shared', 2_000);
      const paused = await Promise.all(Array.from({ length: 8 }, () => store.tryAcquire('shared', 0, NONE)));
      for (const admission of paused) {
        expect(admission.ok).toBe(false);
        if (!admission.ok) expect(admission.waitMs).toBeGreaterThan(1_000);
      }
      // Another key reads for itself, on the same connection.
      expect((await store.tryAcquire('other', 0, NONE)).ok).toBe(true);
      expect(counts.connections).toBe(1);

      // The database ends that connection (a restart, a failover): the next read makes a new one.
      await db.fork().getConnection().execute(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query like '%${TABLES.pauses}%'`);
      await vi.waitFor(async () => expect((await store.tryAcquire('other', 0, NONE)).ok).toBe(true), { timeout: 5_000 });
      expect(counts.connections).toBe(2);
    } finally {
      release?.();
      await db.close();
      await dropTestDatabase(target);
    }
  });
});

describe.skipIf(!redis)('the Redis store', () => {
  it('keeps a sorted set of the window per key under its prefix, in Redis time, expiring a window after the newest', async () => {
    const prefix = testPrefix();
    const store = new RedisRateLimitStore(new Redis(TEST_REDIS_URL), prefix);
    const admin = new Redis(TEST_REDIS_URL);
    try {
      expect((await store.tryAcquire('tenant-a:alice', 2, { requests: 0, cost: 5, windowMs: 60_000 })).ok).toBe(true);
      const [seconds, micros] = await admin.time();
      const [member, at] = await admin.zrange(`${prefix}:tenant-a:alice:calls`, 0, -1, 'WITHSCORES');
      expect(member).toMatch(/:2$/);
      expect(Math.abs(Number(seconds) * 1000 + Number(micros) / 1000 - Number(at))).toBeLessThan(1_000);
      const ttl = await admin.pttl(`${prefix}:tenant-a:alice:calls`);
      expect(ttl).toBeGreaterThan(59_000);
      expect(ttl).toBeLessThanOrEqual(60_000);
    } finally {
      await dropKeys(prefix);
      await admin.quit();
      await store.close();
    }
  });

  it.skipIf(!redisServer)('sends its script whole to a Redis that does not have it (new, restarted or flushed)', async () => {
    const port = await freePort();
    const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => server.once('exit', resolve));
    const client = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, retryStrategy: () => 50 });
    client.on('error', () => {});
    const store = new RedisRateLimitStore(client, testPrefix());
    const limits = { requests: 0, cost: 5, windowMs: 60_000 };
    try {
      // The client keeps reconnecting until the server listens.
      await client.connect().catch(() => {});
      await waitFor(() => client.status === 'ready', 10_000, `redis-server on ${port}`);
      expect((await store.tryAcquire('tenant-a:alice', 1, limits)).ok).toBe(true);
      await client.script('FLUSH');
      expect((await store.tryAcquire('tenant-a:alice', 4, limits)).ok).toBe(true);
      expect((await store.tryAcquire('tenant-a:alice', 1, limits)).ok).toBe(false);
    } finally {
      await store.close();
      server.kill('SIGKILL');
      await exited;
    }
  });
});
