import { createLogger } from '@tributary/core';
import { deleteRedisNamespace, RedisStreamsTransport } from '../src/events/redis.ts';
import { describeLogContract, redisAvailable, TEST_REDIS_URL, testNamespace, waitFor } from '@tributary/core/testing';
import type { LogEntry } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { killRedisConnections } from './fixtures/redis-connections.ts';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const message = (text: string) => ({ routingKey: 'doc.x', messageId: randomUUID(), body: Buffer.from(text) });

describe.skipIf(!(await redisAvailable()))('event log on Redis Streams', () => {
  describeLogContract('redis stream', async (namespace, { tinyRetention }) => {
    // A few kB: retention trims whole radix nodes (about 4 kB each), so the oldest go within a test.
    const log = tinyRetention ? { maxBytes: 8_000 } : {};
    const transport = new RedisStreamsTransport({ url: TEST_REDIS_URL, namespace, logger, connectionName: namespace, log });
    await transport.start();
    return {
      log: transport.log!,
      publish: (messages) => transport.publish(messages),
      cleanup: async () => {
        await transport.close();
        await deleteRedisNamespace(TEST_REDIS_URL, namespace);
      },
    };
  });
});

describe.skipIf(!(await redisAvailable()))('event log on Redis Streams: recovery', () => {
  it('a follower reads again after its connection is cut and hands out every entry exactly once', async () => {
    const namespace = testNamespace('lr');
    const transport = new RedisStreamsTransport({ url: TEST_REDIS_URL, namespace, logger, connectionName: namespace });
    await transport.start();
    try {
      await transport.publish(['a', 'b', 'c'].map(message));
      const got: LogEntry[] = [];
      const handle = await transport.log!.follow({ from: 'beginning' }, (e) => got.push(e));
      await waitFor(() => got.length === 3, 10_000, 'the history');
      // The transport's connection and the follower's own.
      expect(await killRedisConnections(TEST_REDIS_URL, namespace)).toBeGreaterThanOrEqual(2);
      await transport.publish(['d', 'e'].map(message));
      await waitFor(() => got.length >= 5, 10_000, 'entries after the cut');
      await transport.publish([message('f')]);
      await waitFor(() => got.length >= 6, 10_000, 'a live entry');
      await handle.close();
      expect(got.map((e) => e.body.toString())).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    } finally {
      await transport.close();
      await deleteRedisNamespace(TEST_REDIS_URL, namespace);
    }
  });
});
