/**
 * The Redis rate limiter: the token bucket contract (as the memory one in rate-limit.test.ts),
 * over two clients as over two gateway processes, with a key prefix of each test's own; where it
 * keeps a bucket; and how it fails when Redis does not answer. With CI=true a missing Redis fails.
 */
import { freePort, redisAvailable, TEST_REDIS_URL, waitFor } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RateLimitStoreError, REDIS_COMMAND_TIMEOUT_MS, RedisRateLimiter } from '../src/rate-limit.ts';
import { rateLimiterContract } from './rate-limit-contract.ts';

const LIMIT = 5;
const redis = await redisAvailable();
/** Whether a Redis of a test's own can be started; as {@link redisAvailable}, a failure with CI=true. */
const redisServer = ((): boolean => {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('CI=true but redis-server is not installed: the Redis rate limiter tests cannot run');
  console.warn('skipping a Redis rate limiter test: no redis-server');
  return false;
})();
const testPrefix = () => `tributary-test:${randomUUID().slice(0, 8)}:upload-bucket`;

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

describe.skipIf(!redis)('on Redis', () => {
  rateLimiterContract('Redis', async (perMinute) => {
    const prefix = testPrefix();
    const clients = [RedisRateLimiter.client(TEST_REDIS_URL), RedisRateLimiter.client(TEST_REDIS_URL)] as const;
    await Promise.all(clients.map((client) => client.connect()));
    const limiters = [new RedisRateLimiter(clients[0], perMinute, prefix), new RedisRateLimiter(clients[1], perMinute, prefix)] as const;
    return {
      limiters,
      close: async () => {
        await dropKeys(prefix);
        for (const limiter of limiters) await limiter.close();
      },
    };
  });
});

describe.skipIf(!redis)('the Redis rate limiter', () => {
  it('keeps one hash per key under its prefix, in Redis time, expiring when the bucket would be full again', async () => {
    const prefix = testPrefix();
    const client = RedisRateLimiter.client(TEST_REDIS_URL);
    await client.connect();
    const limiter = new RedisRateLimiter(client, LIMIT, prefix);
    const admin = new Redis(TEST_REDIS_URL);
    try {
      expect(await limiter.take('tenant-a:alice', 2)).toBe(0);
      const [seconds, micros] = await admin.time();
      const bucket = await admin.hgetall(`${prefix}:tenant-a:alice`);
      expect(Number(bucket.tokens)).toBeGreaterThanOrEqual(3);
      expect(Number(bucket.tokens)).toBeLessThan(3.01);
      expect(Math.abs(Number(seconds) * 1000 + Number(micros) / 1000 - Number(bucket.at))).toBeLessThan(1_000);
      // Two tokens short at 5 per minute: full again in 24 s.
      const ttl = await admin.pttl(`${prefix}:tenant-a:alice`);
      expect(ttl).toBeGreaterThan(23_000);
      expect(ttl).toBeLessThanOrEqual(24_000);
    } finally {
      await dropKeys(prefix);
      await admin.quit();
      await limiter.close();
    }
  });

  it.skipIf(!redisServer)('sends its script whole to a Redis that does not have it (new, restarted or flushed)', async () => {
    const port = await freePort();
    const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => server.once('exit', resolve));
    const client = RedisRateLimiter.client(`redis://127.0.0.1:${port}`);
    const limiter = new RedisRateLimiter(client, LIMIT, testPrefix());
    try {
      // The client keeps reconnecting until the server listens.
      await client.connect().catch(() => {});
      await waitFor(() => client.status === 'ready', 10_000, `redis-server on ${port}`);
      expect(await limiter.take('tenant-a:alice')).toBe(0);
      await client.script('FLUSH');
      expect(await limiter.take('tenant-a:alice', 4)).toBe(0);
      expect(await limiter.take('tenant-a:alice')).toBeGreaterThan(0);
    } finally {
      await limiter.close();
      server.kill('SIGKILL');
      await exited;
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
