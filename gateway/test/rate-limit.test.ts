/**
 * The upload rate limit without services: the in-memory limiter (the token bucket contract, and
 * its arithmetic on a clock of our own), and what the plugin answers over the limit and when its
 * store fails (RATE_LIMIT_ON_REDIS_ERROR). The Redis limiter meets the same contract in
 * rate-limit.int.test.ts.
 */
import { ApolloServer } from '@apollo/server';
import { registry } from '@tributary/core/metrics';
import type { Logger } from '@tributary/core';
import { describe, expect, it, vi } from 'vitest';
import type { GatewayContext } from '../src/context.ts';
import { MemoryRateLimiter, RateLimitStoreError, uploadRateLimit, type RateLimiter } from '../src/rate-limit.ts';
import { rateLimiterContract } from './rate-limit-contract.ts';

rateLimiterContract('memory', async (perMinute) => {
  const limiter = new MemoryRateLimiter(perMinute);
  return { limiters: [limiter, limiter], close: () => limiter.close() };
});

describe('the in-memory rate limiter on a clock of its own', () => {
  function clocked(perMinute: number) {
    const clock = { now: 1_000_000 };
    return { clock, limiter: new MemoryRateLimiter(perMinute, { now: () => clock.now }) };
  }

  it('refills a token every 60 s / limit, continuously, up to the limit', async () => {
    const { clock, limiter } = clocked(60);
    for (let i = 0; i < 60; i++) expect(await limiter.take('u')).toBe(0);
    expect(await limiter.take('u')).toBe(1_000);
    clock.now += 400;
    expect(await limiter.take('u')).toBe(600);
    clock.now += 600;
    expect(await limiter.take('u')).toBe(0);
    expect(await limiter.take('u')).toBe(1_000);
    clock.now += 10 * 60_000;
    expect(await limiter.take('u', 60)).toBe(0);
    expect(await limiter.take('u')).toBe(1_000);
  });

  it('refills nothing when the clock steps back', async () => {
    const { clock, limiter } = clocked(60);
    expect(await limiter.take('u', 60)).toBe(0);
    clock.now -= 5_000;
    expect(await limiter.take('u')).toBe(1_000);
    clock.now += 1_000;
    expect(await limiter.take('u')).toBe(0);
  });
});

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
    const { run, stop } = await serve(new MemoryRateLimiter(2));
    try {
      expect((await run('mutation { a: uploadDocument(title: "a") b: uploadDocument(title: "b") }')).errors).toBeUndefined();
      const refused = await run('mutation { uploadDocument(title: "c") }');
      expect(refused.status).toBe(429);
      expect(refused.errors?.[0]).toMatchObject({ message: expect.stringMatching(/^upload rate limit exceeded; retry in \d+ s$/), extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 30 } });
      expect((await run('mutation { uploadDocument(title: "d") }', 'bob')).errors).toBeUndefined();
      expect((await run('{ ok }')).errors).toBeUndefined();
    } finally {
      await stop();
    }
  });

  it('counts the fields it is given (UPLOAD_RATE_LIMIT_FIELDS), and no others', async () => {
    const { run, stop } = await serve(new MemoryRateLimiter(2), undefined, undefined, ['uploadInvoice', 'uploadDocument']);
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
