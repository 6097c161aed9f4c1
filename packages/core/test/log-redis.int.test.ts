import { createLogger } from '@tributary/core';
import { deleteRedisNamespace, RedisStreamsTransport } from '../src/events/redis.ts';
import { describeLogContract, redisAvailable, TEST_REDIS_URL } from '@tributary/core/testing';
import { describe } from 'vitest';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

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
