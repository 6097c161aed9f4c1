/**
 * The shared rate windows: one contract for every store (the analysis database on PostgreSQL,
 * this process's memory for PGlite, Redis), and the provider wrapper that waits on them.
 */
import type { Database } from '@tributary/core/db';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, redisAvailable, servicesAvailable, TEST_REDIS_URL } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import pLimit from 'p-limit';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { aiEntities, aiMigrations, AiMetrics, ChainAnalyzer, OpenAIProvider } from '../src/index.ts';
import { LimitedProvider, MemoryRateLimitStore, RedisRateLimitStore, SqlRateLimitStore, windowWait, type RateLimitStore } from '../src/limits.ts';
import { startOpenAITestServer } from '../src/testing/index.ts';

const WINDOW = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Admit as fast as allowed from `workers` racing loops for `ms`. Each admission as the interval
 * our clock can place it in: the store decides on its own clock (the database's, Redis's) some
 * time between the request leaving and the answer arriving.
 */
async function race(store: RateLimitStore, key: string, limits: { requests: number; tokens: number; windowMs: number }, tokens: number, workers: number, ms: number): Promise<Admitted[]> {
  const admitted: Admitted[] = [];
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < until) {
        const sent = performance.now();
        const admission = await store.tryAcquire(key, tokens, limits);
        if (admission.ok) admitted.push({ sent, answered: performance.now() });
        else await sleep(Math.min(admission.waitMs, until - Date.now() + 1));
      }
    }),
  );
  return admitted.sort((a, b) => a.sent - b.sent);
}

interface Admitted {
  sent: number;
  answered: number;
}

/**
 * The most admissions certainly inside one window: those sent at or after some admission's
 * request left and answered less than `windowMs` after it. No slack for the time an answer
 * spends on the way back (a loaded machine holds one back for tens of ms) is needed, nor given.
 */
function surelyInOneWindow(admitted: readonly Admitted[], windowMs: number): number {
  let most = 0;
  for (const start of admitted) {
    most = Math.max(most, admitted.filter((a) => a.sent >= start.sent && a.answered < start.sent + windowMs).length);
  }
  return most;
}


function describeStoreContract(name: string, available: boolean, open: () => Promise<{ stores: [RateLimitStore, RateLimitStore]; close(): Promise<void> }>) {
  describe.skipIf(!available)(`rate-limit store: ${name}`, () => {
    let stores: [RateLimitStore, RateLimitStore];
    let close: () => Promise<void>;
    beforeAll(async () => {
      ({ stores, close } = await open());
    });
    afterAll(async () => {
      await close?.();
    });
    const key = () => `provider-${randomUUID().slice(0, 8)}`;

    it('never admits more calls than the limit in any window, however many workers race for them', async () => {
      const k = key();
      const limits = { requests: 5, tokens: 0, windowMs: WINDOW };
      // Two handles (two processes' pools or clients), three workers each.
      const [a, b] = await Promise.all([race(stores[0], k, limits, 0, 3, 2_500), race(stores[1], k, limits, 0, 3, 2_500)]);
      const all = [...a, ...b];
      expect(surelyInOneWindow(all, WINDOW)).toBeLessThanOrEqual(5);
      // …and it is not starved: about 5 per window over 2.5 windows.
      expect(all.length).toBeGreaterThanOrEqual(10);
      expect(all.length).toBeLessThanOrEqual(15);
    });

    it('counts tokens: a call waits until enough of the window has left', async () => {
      const k = key();
      const limits = { requests: 0, tokens: 100, windowMs: WINDOW };
      expect(await stores[0].tryAcquire(k, 40, limits)).toMatchObject({ ok: true });
      expect(await stores[1].tryAcquire(k, 40, limits)).toMatchObject({ ok: true });
      const refused = await stores[0].tryAcquire(k, 40, limits);
      expect(refused.ok).toBe(false);
      if (!refused.ok) {
        expect(refused.waitMs).toBeGreaterThan(WINDOW / 2);
        expect(refused.waitMs).toBeLessThanOrEqual(WINDOW + 50);
        await sleep(refused.waitMs);
      }
      expect(await stores[1].tryAcquire(k, 40, limits)).toMatchObject({ ok: true });
    });

    it('counts a finished call from its end: the provider saw it no earlier than it was sent', async () => {
      const k = key();
      const limits = { requests: 1, tokens: 0, windowMs: WINDOW };
      const first = await stores[0].tryAcquire(k, 0, limits);
      expect(first.ok && first.call).toBeTruthy();
      await sleep(400);
      await stores[0].finish(k, (first as { call: string }).call);
      const refused = await stores[1].tryAcquire(k, 0, limits);
      expect(refused.ok).toBe(false);
      // A full window from the end (400 ms after the admission), not from the admission.
      if (!refused.ok) expect(refused.waitMs).toBeGreaterThan(WINDOW - 100);
    });

    it('holds every call of a key, in every handle, for a pause, limits or not', async () => {
      const k = key();
      const none = { requests: 0, tokens: 0, windowMs: WINDOW };
      await stores[0].pause(k, 400);
      const held = await stores[1].tryAcquire(k, 0, none);
      expect(held.ok).toBe(false);
      if (!held.ok) expect(held.waitMs).toBeGreaterThan(300);
      expect(await stores[1].tryAcquire(key(), 0, none)).toEqual({ ok: true });
      await sleep(450);
      expect(await stores[0].tryAcquire(k, 0, none)).toEqual({ ok: true });
    });
  });
}

describeStoreContract('the analysis database (PostgreSQL)', await servicesAvailable(), async () => {
  const target = randomDatabaseTarget('tributary_ai');
  const dbs: Database[] = [];
  for (let i = 0; i < 2; i++) dbs.push(await openTestDatabase(target, { entities: aiEntities, migrations: aiMigrations, poolSize: 4 }));
  return {
    stores: [new SqlRateLimitStore(dbs[0]!), new SqlRateLimitStore(dbs[1]!)],
    close: async () => {
      for (const db of dbs) await db.close();
      await dropTestDatabase(target);
    },
  };
});
describe.skipIf(!(await servicesAvailable()))('rate-limit store: the analysis database, without limits', () => {
  it('reads the pauses on a connection of its own, one read shared by the calls that ask at once, and holds them all for a pause', async () => {
    const target = randomDatabaseTarget('tributary_ai');
    const db = await openTestDatabase(target, { entities: aiEntities, migrations: aiMigrations, poolSize: 1 });
    let release: (() => void) | undefined;
    try {
      // Every fork's statements go through the driver's one connection object: count them there.
      const connection = db.fork().getConnection();
      const execute = connection.execute.bind(connection);
      let pooled = 0;
      connection.execute = ((...args: Parameters<typeof execute>) => {
        pooled++;
        return execute(...args);
      }) as typeof connection.execute;
      // And those on connections outside the pool.
      const connect = db.connect.bind(db);
      let own = 0;
      let connections = 0;
      db.connect = async () => {
        connections++;
        const client = await connect();
        const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
        (client as { query: unknown }).query = (...args: unknown[]) => {
          own++;
          return query(...args);
        };
        return client;
      };
      const store = new SqlRateLimitStore(db);
      const none = { requests: 0, tokens: 0, windowMs: 60_000 };

      // The pool's one connection is held by a transaction for the whole wave: the reads must not need it.
      const held = db.fork().transactional(async (em) => {
        await em.getConnection().execute('select 1', [], 'all', em.getTransactionContext());
        await new Promise<void>((resolve) => (release = resolve));
      });
      await vi.waitFor(() => expect(release).toBeTypeOf('function'));
      const before = pooled;
      const wave = await Promise.race([
        Promise.all(Array.from({ length: 32 }, () => store.tryAcquire('shared', 0, none))),
        sleep(5_000).then(() => Promise.reject(new Error('the pause reads waited for the pool'))),
      ]);
      expect(wave.every((a) => a.ok)).toBe(true);
      expect({ pooled: pooled - before, own, connections }).toEqual({ pooled: 0, own: 1, connections: 1 });
      release!();
      await held;

      await store.pause('shared', 2_000);
      const paused = await Promise.all(Array.from({ length: 8 }, () => store.tryAcquire('shared', 0, none)));
      for (const admission of paused) {
        expect(admission.ok).toBe(false);
        if (!admission.ok) expect(admission.waitMs).toBeGreaterThan(1_000);
      }
      // Another key reads for itself, on the same connection.
      expect((await store.tryAcquire('other', 0, none)).ok).toBe(true);
      expect(connections).toBe(1);

      // The database ends that connection (a restart, a failover): the next read makes a new one.
      await db.fork().getConnection().execute(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query like '%ai_rate_pauses%'`);
      await vi.waitFor(async () => expect((await store.tryAcquire('other', 0, none)).ok).toBe(true), { timeout: 5_000 });
      expect(connections).toBe(2);
    } finally {
      release?.();
      await db.close();
      await dropTestDatabase(target);
    }
  });
});
describeStoreContract('memory (embedded PGlite)', true, async () => {
  const store = new MemoryRateLimitStore();
  return { stores: [store, store], close: async () => {} };
});
describeStoreContract('Redis', await redisAvailable(), async () => {
  const prefix = `tributary-test:${randomUUID().slice(0, 8)}`;
  const clients = [new Redis(TEST_REDIS_URL), new Redis(TEST_REDIS_URL)];
  return {
    stores: [new RedisRateLimitStore(clients[0]!, prefix), new RedisRateLimitStore(clients[1]!, prefix)],
    close: async () => {
      const keys = await clients[0]!.keys(`${prefix}:*`);
      if (keys.length > 0) await clients[0]!.del(...keys);
      for (const client of clients) await client.quit();
    },
  };
});

describe('windowWait', () => {
  const limits = { requests: 2, tokens: 0, windowMs: 1_000 };
  it('is 0 with room, else the time until the call that frees a slot leaves the window', () => {
    expect(windowWait([{ at: 0, tokens: 0 }], 500, 0, limits)).toBe(0);
    expect(windowWait([{ at: 0, tokens: 0 }, { at: 100, tokens: 0 }], 500, 0, limits)).toBeGreaterThanOrEqual(500);
    expect(windowWait([{ at: 0, tokens: 50 }, { at: 100, tokens: 50 }], 500, 60, { requests: 0, tokens: 100, windowMs: 1_000 })).toBeGreaterThanOrEqual(600);
  });
});

describe('a provider within its limits', () => {
  it("pauses every caller, in every worker, for a 429's Retry-After", async () => {
    const server = await startOpenAITestServer({ apiKey: 'k' });
    try {
      const store = new MemoryRateLimitStore();
      const make = () =>
        new ChainAnalyzer([new LimitedProvider(new OpenAIProvider({ apiKey: 'k', baseURL: server.baseURL, model: 'm', metrics: new AiMetrics() }), { slots: pLimit(2), rate: { store } })], {
          retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 },
          metrics: new AiMetrics(),
        });
      const [a, b] = [make(), make()];
      server.inject({ type: 'status', status: 429, retryAfter: '2' }, { times: 1, endpoint: 'chat' });
      const started = Date.now();
      const first = a.analyze({ text: 'Revenue grew strongly this quarter.' });
      await sleep(200);
      // A second worker's call comes during the pause the first one's 429 set: it waits too.
      const second = b.analyze({ text: 'Costs fell in every region.' });
      await Promise.all([first, second]);
      const chats = server.requests.filter((r) => r.endpoint === 'chat');
      expect(chats).toHaveLength(3);
      for (const call of chats.slice(1)) expect(call.receivedAt - started).toBeGreaterThanOrEqual(1_950);
    } finally {
      await server.close();
    }
  });

  it('refuses at once a call that could never fit the tokens per window', async () => {
    const server = await startOpenAITestServer({ apiKey: 'k' });
    try {
      const provider = new LimitedProvider(new OpenAIProvider({ apiKey: 'k', baseURL: server.baseURL, model: 'm', metrics: new AiMetrics() }), { rate: { store: new MemoryRateLimitStore(), limits: { tokens: 10 } } });
      await expect(provider.analyze({ text: 'Revenue grew strongly this quarter.' })).rejects.toMatchObject({ code: 'PROVIDER_REJECTED' });
      expect(server.requests).toHaveLength(0);
    } finally {
      await server.close();
    }
  });
});
