import { randomUUID } from 'node:crypto';
import { createLogger } from '@tributary/core';
import { describeLogContract, expectFollowerAcrossLoss, natsAvailable, transportLogFixture, startTestBroker, TEST_NATS_URL, testNamespace, type TestBroker } from '@tributary/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { deleteNatsNamespace, NatsJetStreamTransport } from '@tributary/core/events';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const message = (text: string) => ({ routingKey: 'doc.x', messageId: randomUUID(), body: Buffer.from(text) });

describe.skipIf(!(await natsAvailable()))('event log on NATS JetStream', () => {
  describeLogContract('nats jetstream', async (namespace, { tinyRetention }) => {
    // JetStream discards single messages (not segments): a few kB or a few dozen entries show retention at once.
    const log = tinyRetention ? { maxBytes: 8_000, maxMessages: 40 } : {};
    const transport = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace, log });
    return transportLogFixture(transport, () => deleteNatsNamespace(TEST_NATS_URL, namespace));
  });
});

describe.skipIf(!(await natsAvailable()))('event log on NATS JetStream: recovery and declaration', () => {
  let server: TestBroker | undefined;
  afterEach(async () => {
    await server?.dispose();
    server = undefined;
  });

  it('a follower carries on after a server restart and hands out every entry exactly once; a read after it gets the rest', async () => {
    server = await startTestBroker('nats');
    const namespace = testNamespace('nl');
    const transport = new NatsJetStreamTransport({ url: server.url, namespace, logger, connectionName: namespace, publishTimeoutMs: 5_000 });
    await transport.start();
    try {
      const got = await expectFollowerAcrossLoss(transport, () => server!.restart(0));
      expect(got.map((e) => e.offset)).toEqual([1, 2, 3, 4, 5, 6]);
      const rest: string[] = [];
      const last = await transport.log!.read({ from: { after: 3 } }, (e) => void rest.push(e.body.toString()));
      expect(rest).toEqual(['d', 'e', 'f']);
      expect(last).toBe(6);
    } finally {
      await transport.close();
      await deleteNatsNamespace(server.url, namespace).catch(() => {});
    }
  }, 60_000);

  it('keeps the stream it finds when another process created it with other retention, and says so', async () => {
    const namespace = testNamespace('nm');
    const warnings: string[] = [];
    const capture = createLogger({ service: 'test', level: 'warn' });
    const spy = Object.assign(Object.create(capture) as typeof capture, {
      child: () => spy,
      warn: (_: unknown, text?: string) => void warnings.push(String(text)),
    });
    const first = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace, log: { maxBytes: 5_000_000 } });
    const second = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger: spy, connectionName: `${namespace}-2`, log: { maxBytes: 9_000_000, maxAgeMs: 60_000 } });
    try {
      await first.start();
      await second.start();
      expect(warnings.some((w) => w.includes('exists with other settings'))).toBe(true);
      await second.publish([message('through the second')]);
      const texts: string[] = [];
      await first.log!.read({ from: 'beginning' }, (e) => void texts.push(e.body.toString()));
      expect(texts).toEqual(['through the second']);
      const stats = await first.log!.stats();
      expect(stats.entries).toBe(1);
    } finally {
      await first.close();
      await second.close();
      await deleteNatsNamespace(TEST_NATS_URL, namespace);
    }
  });
});
