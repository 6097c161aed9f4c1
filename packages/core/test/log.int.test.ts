import { createLogger } from '@tributary/core';
import { eventLogMigrations, InMemoryTransport, RabbitMqTransport, SqlEventLog } from '@tributary/core/events';
import { describeLogContract, dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable, TEST_AMQP_URL } from '@tributary/core/testing';
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

  describeLogContract('sql table on PostgreSQL', async (namespace, { tinyRetention }) => {
    const target = randomDatabaseTarget(`tributary_${namespace}`);
    const db = await openTestDatabase(target, { migrations: eventLogMigrations });
    const log = new SqlEventLog(db, tinyRetention ? { maxEntries: 20 } : {});
    const transport = new InMemoryTransport(namespace, log);
    await transport.start();
    return {
      log,
      publish: (messages) => transport.publish(messages),
      trim: async () => void (await log.trim()),
      cleanup: async () => {
        await transport.close();
        log.close();
        await db.close();
        await dropTestDatabase(target);
      },
    };
  });
});
