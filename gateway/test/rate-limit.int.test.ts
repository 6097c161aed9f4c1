/**
 * The upload rate limiters: one contract for both stores (memory, and Redis shared by two
 * clients as by two gateway processes), and how the Redis one fails when Redis does not answer.
 */
import { freePort, redisAvailable, TEST_REDIS_URL } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryRateLimiter, RateLimitStoreError, REDIS_COMMAND_TIMEOUT_MS, RedisRateLimiter, type RateLimiter } from '../src/limits.ts';

const LIMIT = 5;

function describeLimiterContract(name: string, available: boolean, open: () => Promise<{ limiters: [RateLimiter, RateLimiter]; close(): Promise<void> }>) {
  describe.skipIf(!available)(`upload rate limiter: ${name}`, () => {
    let limiters: [RateLimiter, RateLimiter];
    let close: () => Promise<void>;
    beforeAll(async () => {
      ({ limiters, close } = await open());
    });
    afterAll(async () => {
      await close?.();
    });
    const key = () => `tenant-a:${randomUUID().slice(0, 8)}`;

    it('allows exactly the limit per key across both handles, then says how long to wait', async () => {
      const k = key();
      const results: number[] = [];
      for (let i = 0; i < LIMIT; i++) results.push(await limiters[i % 2]!.take(k));
      expect(results).toEqual([0, 0, 0, 0, 0]);
      const wait = await limiters[1].take(k);
      expect(wait).toBeGreaterThan(0);
      expect(wait).toBeLessThanOrEqual(60_000);
      expect(await limiters[0].take(key())).toBe(0);
    });

    it('admits exactly the limit when many takes race from both handles', async () => {
      const k = key();
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => limiters[i % 2]!.take(k)));
      expect(results.filter((wait) => wait === 0)).toHaveLength(LIMIT);
    });

    it('takes n points in one operation, and nothing of a take it refuses', async () => {
      const k = key();
      expect(await limiters[0].take(k, LIMIT + 1)).toBeGreaterThan(0);
      expect(await limiters[1].take(k, 3)).toBe(0);
      expect(await limiters[0].take(k, 3)).toBeGreaterThan(0);
      expect(await limiters[1].take(k, 2)).toBe(0);
      expect(await limiters[0].take(k)).toBeGreaterThan(0);
    });
  });
}

describeLimiterContract('memory', true, async () => {
  const limiter = new MemoryRateLimiter(LIMIT);
  return { limiters: [limiter, limiter], close: async () => {} };
});

const redis = await redisAvailable();
describeLimiterContract('Redis', redis, async () => {
  const prefix = `tributary-test:${randomUUID().slice(0, 8)}:upload-rate`;
  const clients = [RedisRateLimiter.client(TEST_REDIS_URL), RedisRateLimiter.client(TEST_REDIS_URL)] as const;
  await Promise.all(clients.map((client) => client.connect()));
  const limiters: [RateLimiter, RateLimiter] = [new RedisRateLimiter(clients[0], LIMIT, prefix), new RedisRateLimiter(clients[1], LIMIT, prefix)];
  return {
    limiters,
    close: async () => {
      const admin = new Redis(TEST_REDIS_URL);
      const keys = await admin.keys(`${prefix}:*`);
      if (keys.length > 0) await admin.del(...keys);
      await admin.quit();
      for (const limiter of limiters) await limiter.close();
    },
  };
});

describe.skipIf(!redis)('the Redis rate limiter', () => {
  it('keeps one counter per key under its prefix, expiring with the 60 s window', async () => {
    const prefix = `tributary-test:${randomUUID().slice(0, 8)}:upload-rate`;
    const client = RedisRateLimiter.client(TEST_REDIS_URL);
    await client.connect();
    const limiter = new RedisRateLimiter(client, LIMIT, prefix);
    const admin = new Redis(TEST_REDIS_URL);
    try {
      expect(await limiter.take('tenant-a:alice', 2)).toBe(0);
      expect(await admin.get(`${prefix}:tenant-a:alice`)).toBe('2');
      const ttl = await admin.pttl(`${prefix}:tenant-a:alice`);
      expect(ttl).toBeGreaterThan(55_000);
      expect(ttl).toBeLessThanOrEqual(60_000);
    } finally {
      await admin.del(`${prefix}:tenant-a:alice`);
      await admin.quit();
      await limiter.close();
    }
  });

  it('fails a take within milliseconds, with RateLimitStoreError, when Redis is not there', async () => {
    // Nothing listens on this port: the take must not wait for a connection.
    const client = RedisRateLimiter.client(`redis://127.0.0.1:${await freePort()}`);
    await client.connect().catch(() => {});
    const limiter = new RedisRateLimiter(client, LIMIT, 'unused');
    try {
      const started = performance.now();
      const error = await limiter.take('tenant-a:alice').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RateLimitStoreError);
      expect(performance.now() - started).toBeLessThan(REDIS_COMMAND_TIMEOUT_MS);
    } finally {
      await limiter.close();
    }
  });
});
