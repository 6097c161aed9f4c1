import { createLogger } from '@tributary/core';
import { eventLogMigrations, RabbitMqTransport } from '@tributary/core/events';
import { closeBrokerConnections, describeLogContract, dropTestDatabase, expectFollowerAcrossLoss, transportLogFixture, openTestDatabase, randomDatabaseTarget, servicesAvailable, sqlLogFixture, TEST_AMQP_URL, testNamespace } from '@tributary/core/testing';
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const message = (text: string) => ({ routingKey: 'doc.x', messageId: randomUUID(), body: Buffer.from(text) });

describe.skipIf(!(await servicesAvailable()))('event log on RabbitMQ and PostgreSQL', () => {
  describeLogContract('rabbitmq stream', async (namespace, { tinyRetention }) => {
    // Tiny segments so retention (which drops whole segments) shows within a test.
    const log = tinyRetention ? { maxBytes: 8_000, maxSegmentBytes: 2_000 } : {};
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace, log });
    // deleteExchange needs the transport's connection: it runs before the fixture closes it.
    const fixture = await transportLogFixture(transport, async () => {});
    return {
      ...fixture,
      cleanup: async () => {
        await transport.deleteExchange();
        await fixture.cleanup();
      },
    };
  });

  describeLogContract('sql table on PostgreSQL', async (namespace, options) => {
    const target = randomDatabaseTarget(`tributary_${namespace}`);
    const db = await openTestDatabase(target, { migrations: eventLogMigrations });
    return sqlLogFixture(db, namespace, options, async () => {
      await db.close();
      await dropTestDatabase(target);
    });
  });

});

describe.skipIf(!(await servicesAvailable()))('event log on RabbitMQ: recovery and declaration', () => {
  it('a follower attaches again after its connection is lost and hands out every entry exactly once', async () => {
    const namespace = testNamespace('lr');
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    await transport.start();
    try {
      await expectFollowerAcrossLoss(transport, async () => expect(await closeBrokerConnections(namespace)).toBeGreaterThan(0));
    } finally {
      await transport.deleteExchange();
      await transport.close();
    }
  });

  it('a read whose connection is lost attaches again and ends with every entry exactly once', async () => {
    const namespace = testNamespace('lr');
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    await transport.start();
    try {
      // More than the read's prefetch (200): the rest must come over a new channel.
      const sent = Array.from({ length: 500 }, (_, i) => `e${i}`);
      await transport.publish(sent.map(message));
      const got: string[] = [];
      await transport.log!.read({ from: 'beginning' }, async (e) => {
        got.push(e.body.toString());
        if (got.length === 10) expect(await closeBrokerConnections(namespace)).toBeGreaterThan(0);
      });
      expect(got).toEqual(sent);
    } finally {
      await transport.deleteExchange();
      await transport.close();
    }
  });

  it('keeps the stream it finds when another process declared it with other retention, and says so', async () => {
    const namespace = testNamespace('lm');
    const warnings: string[] = [];
    const capture = createLogger({ service: 'test', level: 'warn' });
    const spy = Object.assign(Object.create(capture) as typeof capture, {
      child: () => spy,
      warn: (_: unknown, message?: string) => void warnings.push(String(message)),
    });
    const first = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace, log: { maxBytes: 5_000_000 } });
    const second = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger: spy, connectionName: `${namespace}-2`, log: { maxBytes: 9_000_000, maxAgeMs: 60_000 } });
    try {
      await first.start();
      await second.start();
      expect(warnings.some((w) => w.includes('exists with other retention arguments'))).toBe(true);
      await second.publish([message('through the second')]);
      const texts: string[] = [];
      await first.log!.read({ from: 'beginning' }, (e) => void texts.push(e.body.toString()));
      expect(texts).toEqual(['through the second']);
    } finally {
      await first.deleteExchange();
      await first.close();
      await second.close();
    }
  });
});
