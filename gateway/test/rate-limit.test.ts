/**
 * The upload rate limit without services: what the plugin answers over the limit (a sliding
 * window of UPLOAD_RATE_LIMIT_PER_MINUTE uploads in any 60 s, counted by @tributary/core's
 * rate limiter, whose stores meet their contract in packages/core/test/rate-limit*), and when its
 * store fails (RATE_LIMIT_ON_REDIS_ERROR).
 */
import { ApolloServer } from '@apollo/server';
import { registry } from '@tributary/core/metrics';
import { MemoryRateLimitStore, RateLimitStoreError, windowLimiter, type RateLimiter } from '@tributary/core/rate-limit';
import type { Logger } from '@tributary/core';
import { describe, expect, it, vi } from 'vitest';
import type { GatewayContext } from '../src/context.ts';
import { uploadRateLimit, uploadWindow } from '../src/rate-limit.ts';

/** The upload limiter of `perMinute` in memory, on `clock` when given. */
const memoryLimiter = (perMinute: number, clock?: { now: number }): RateLimiter =>
  windowLimiter(new MemoryRateLimitStore(clock ? { now: () => clock.now } : {}), uploadWindow(perMinute));

const typeDefs = 'type Query { ok: Boolean } type Mutation { uploadDocument(title: String): Boolean uploadInvoice: Boolean rename: Boolean }';
const resolvers = { Mutation: { uploadDocument: () => true, uploadInvoice: () => true, rename: () => true } };

async function serve(limiter: RateLimiter, onStoreError?: 'allow' | 'deny', logger?: Logger, fields: readonly string[] = ['uploadDocument']) {
  const server = new ApolloServer<GatewayContext>({ typeDefs, resolvers, plugins: [uploadRateLimit(limiter, { fields, ...(onStoreError ? { onStoreError } : {}), ...(logger ? { logger } : {}) })] });
  await server.start();
  const run = async (query: string, userId = 'alice') => {
    const response = await server.executeOperation({ query }, { contextValue: { tenantId: 'tenant-a', userId } });
    if (response.body.kind !== 'single') throw new Error('expected a single result');
    return { status: response.http.status, ...response.body.singleResult };
  };
  return { run, stop: () => server.stop() };
}

const failing: RateLimiter = {
  take: async () => {
    throw new RateLimitStoreError('Redis connection is not ready');
  },
  close: async () => {},
};

async function storeErrors(outcome: string): Promise<number> {
  const metric = await registry.getSingleMetric('tributary_gateway_rate_limit_store_errors_total')?.get();
  return metric?.values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

describe('the upload rate limit plugin', () => {
  it('refuses uploads over the limit with RATE_LIMITED, HTTP 429 and the seconds to wait', async () => {
    const { run, stop } = await serve(memoryLimiter(2));
    try {
      expect((await run('mutation { a: uploadDocument(title: "a") b: uploadDocument(title: "b") }')).errors).toBeUndefined();
      const refused = await run('mutation { uploadDocument(title: "c") }');
      expect(refused.status).toBe(429);
      // Until the first two leave the window: a minute after they came (a token bucket of 2 said 30 s).
      expect(refused.errors?.[0]).toMatchObject({ message: expect.stringMatching(/^upload rate limit exceeded; retry in \d+ s$/), extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 60 } });
      expect((await run('mutation { uploadDocument(title: "d") }', 'bob')).errors).toBeUndefined();
      expect((await run('{ ok }')).errors).toBeUndefined();
    } finally {
      await stop();
    }
  });

  it('admits the limit in any 60 s, says when the oldest uploads leave, and admits again as they do', async () => {
    const clock = { now: 1_000_000 };
    const { run, stop } = await serve(memoryLimiter(3, clock));
    try {
      expect((await run('mutation { uploadDocument }')).errors).toBeUndefined();
      clock.now += 20_000;
      expect((await run('mutation { a: uploadDocument b: uploadDocument }')).errors).toBeUndefined();
      clock.now += 10_000;
      const refused = await run('mutation { uploadDocument }');
      expect(refused.status).toBe(429);
      expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 30 });
      // Two uploads need the two that came 20 s later to leave too.
      clock.now += 30_000;
      expect((await run('mutation { a: uploadDocument b: uploadDocument }')).errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 20 });
      expect((await run('mutation { uploadDocument }')).errors).toBeUndefined();
      expect((await run('mutation { uploadDocument }')).errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 20 });
    } finally {
      await stop();
    }
  });

  it('refuses a request that alone makes more uploads than the limit, with no Retry-After', async () => {
    const { run, stop } = await serve(memoryLimiter(2));
    try {
      const refused = await run('mutation { a: uploadDocument b: uploadDocument c: uploadDocument }');
      expect(refused.status).toBe(429);
      expect(refused.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
      expect(refused.errors?.[0]?.extensions).not.toHaveProperty('retryAfterSeconds');
      // It took nothing.
      expect((await run('mutation { a: uploadDocument b: uploadDocument }')).errors).toBeUndefined();
    } finally {
      await stop();
    }
  });

  it('counts the fields it is given (UPLOAD_RATE_LIMIT_FIELDS), and no others', async () => {
    const { run, stop } = await serve(memoryLimiter(2), undefined, undefined, ['uploadInvoice', 'uploadDocument']);
    try {
      expect((await run('mutation { uploadInvoice rename }')).errors).toBeUndefined();
      expect((await run('mutation { a: rename b: rename c: rename }')).errors).toBeUndefined();
      expect((await run('mutation { uploadDocument }')).errors).toBeUndefined();
      expect((await run('mutation { uploadInvoice }')).errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
    } finally {
      await stop();
    }
  });

  it('lets uploads through when its store fails and RATE_LIMIT_ON_REDIS_ERROR is allow (the default), counting them', async () => {
    const before = await storeErrors('allowed');
    const warn = vi.fn();
    const { run, stop } = await serve(failing, undefined, { warn } as unknown as Logger);
    try {
      expect((await run('mutation { a: uploadDocument b: uploadDocument }')).errors).toBeUndefined();
      expect((await run('mutation { uploadDocument }')).errors).toBeUndefined();
      expect(await storeErrors('allowed')).toBe(before + 3);
      // Logged, but not once per request: a down Redis under load would flood the log.
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]?.[1]).toBe('upload rate limit unavailable; uploads allowed (RATE_LIMIT_ON_REDIS_ERROR=allow)');
    } finally {
      await stop();
    }
  });

  it('refuses uploads with SERVICE_UNAVAILABLE (HTTP 503) when its store fails and RATE_LIMIT_ON_REDIS_ERROR is deny', async () => {
    const before = await storeErrors('denied');
    const { run, stop } = await serve(failing, 'deny');
    try {
      const refused = await run('mutation { uploadDocument }');
      expect(refused.status).toBe(503);
      expect(refused.errors?.[0]).toMatchObject({ message: 'upload rate limit unavailable; retry later', extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1 } });
      expect(await storeErrors('denied')).toBe(before + 1);
      // Queries never ask the store.
      expect((await run('{ ok }')).errors).toBeUndefined();
    } finally {
      await stop();
    }
  });
});
