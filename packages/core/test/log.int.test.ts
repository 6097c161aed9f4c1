import { createLogger } from '@tributary/core';
import { RabbitMqTransport } from '@tributary/core/events';
import { describeLogContract, servicesAvailable, TEST_AMQP_URL } from '@tributary/core/testing';
import { describe } from 'vitest';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

describe.skipIf(!(await servicesAvailable()))('event log on RabbitMQ and PostgreSQL', () => {
  describeLogContract('rabbitmq stream', async (namespace, { tinyRetention }) => {
    // Tiny segments so retention (which drops whole segments) shows within a test.
    const log = tinyRetention ? { maxBytes: 8_000, maxSegmentBytes: 2_000 } : {};
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace, log });
    await transport.start();
    return {
      log: transport.log!,
      publish: (messages) => transport.publish(messages),
      cleanup: async () => {
        await transport.deleteExchange();
        await transport.close();
      },
    };
  });
});
