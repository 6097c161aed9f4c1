import { createLogger } from '@tributary/core';
import { deleteRedisNamespace, RedisStreamsTransport } from '../src/events/redis.ts';
import { describeLogContract, expectFollowerAcrossLoss, redisAvailable, transportLogFixture, TEST_REDIS_URL, testNamespace } from '@tributary/core/testing';
import { describe, expect, it } from 'vitest';
import { killRedisConnections } from './fixtures/redis-connections.ts';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

describe.skipIf(!(await redisAvailable()))('event log on Redis Streams', () => {
  describeLogContract('redis stream', async (namespace, { tinyRetention }) => {
    // A few kB: retention trims whole radix nodes (about 4 kB each), so the oldest go within a test.
    const log = tinyRetention ? { maxBytes: 8_000 } : {};
    const transport = new RedisStreamsTransport({ url: TEST_REDIS_URL, namespace, logger, connectionName: namespace, log });
    return transportLogFixture(transport, () => deleteRedisNamespace(TEST_REDIS_URL, namespace));
  });
});

describe.skipIf(!(await redisAvailable()))('event log on Redis Streams: recovery', () => {
  it('a follower reads again after its connection is cut and hands out every entry exactly once', async () => {
    const namespace = testNamespace('lr');
    const transport = new RedisStreamsTransport({ url: TEST_REDIS_URL, namespace, logger, connectionName: namespace });
    await transport.start();
    try {
      // The transport's connection and the follower's own.
      await expectFollowerAcrossLoss(transport, async () => expect(await killRedisConnections(TEST_REDIS_URL, namespace)).toBeGreaterThanOrEqual(2));
    } finally {
      await transport.close();
      await deleteRedisNamespace(TEST_REDIS_URL, namespace);
    }
  });
});
