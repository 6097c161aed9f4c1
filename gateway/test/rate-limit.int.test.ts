/**
 * The upload rate limit on Redis (REDIS_URL): shared by gateway processes under the namespace's
 * `upload-window` keys, and failing fast when Redis does not answer. The Redis store itself meets
 * the rate-limit contract in packages/core/test/rate-limit.int.test.ts. With CI=true a missing
 * Redis fails.
 */
import { createLogger } from '@tributary/core';
import { RateLimitStoreError, RedisRateLimitStore } from '@tributary/core/rate-limit';
import { freePort, redisAvailable, TEST_REDIS_URL } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '../src/config.ts';
import { createRateLimiter, rateLimitRedisClient, REDIS_COMMAND_TIMEOUT_MS } from '../src/rate-limit.ts';

const redis = await redisAvailable();
const secret = 'a-test-secret-of-at-least-32-characters!';
const silent = createLogger({ service: 'gateway', level: 'silent' });

describe.skipIf(!redis)('the upload rate limit in Redis', () => {
  it('is one window per user for every gateway process, under <TRIBUTARY_NAMESPACE>:upload-window', async () => {
    const namespace = `tributary-test-${randomUUID().slice(0, 8)}`;
    const config = loadGatewayConfig({ AUTH_JWT_SECRET: secret, INTERNAL_SIGNING_SECRET: secret, REDIS_URL: TEST_REDIS_URL, TRIBUTARY_NAMESPACE: namespace, UPLOAD_RATE_LIMIT_PER_MINUTE: '3' });
    const [a, b] = [await createRateLimiter(config, silent), await createRateLimiter(config, silent)];
    const admin = new Redis(TEST_REDIS_URL);
    try {
      expect(await a.take('tenant-a:alice', 2)).toBe(0);
      expect(await b.take('tenant-a:alice')).toBe(0);
      const wait = await a.take('tenant-a:alice');
      // Until the first two leave the window, a minute after they came.
      expect(wait).toBeGreaterThan(59_000);
      expect(wait).toBeLessThanOrEqual(60_000);
      expect(await b.take('tenant-a:bob', 3)).toBe(0);
      expect((await admin.keys(`${namespace}:*`)).sort()).toEqual([`${namespace}:upload-window:tenant-a:alice:calls`, `${namespace}:upload-window:tenant-a:bob:calls`]);
    } finally {
      const keys = await admin.keys(`${namespace}:*`);
      if (keys.length > 0) await admin.del(...keys);
      await admin.quit();
      await a.close();
      await b.close();
    }
  });

  it('fails a take within milliseconds, with RateLimitStoreError, when Redis is not there', async () => {
    // Nothing listens on this port: the take must not wait for a connection.
    const client = rateLimitRedisClient(`redis://127.0.0.1:${await freePort()}`);
    await client.connect().catch(() => {});
    const store = new RedisRateLimitStore(client, 'unused');
    try {
      const started = performance.now();
      const error = await store.tryAcquire('tenant-a:alice', 1, { requests: 0, cost: 5, windowMs: 60_000 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RateLimitStoreError);
      expect(performance.now() - started).toBeLessThan(REDIS_COMMAND_TIMEOUT_MS);
    } finally {
      await store.close();
    }
  });
});
