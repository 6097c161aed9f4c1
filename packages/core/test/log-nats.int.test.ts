import { createLogger } from '@tributary/core';
import { describeLogContract, natsAvailable, TEST_NATS_URL } from '@tributary/core/testing';
import { describe } from 'vitest';
// Not yet exported from @tributary/core/events (the lead wires it there).
import { deleteNatsNamespace, NatsJetStreamTransport } from '../src/events/nats.ts';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

describe.skipIf(!(await natsAvailable()))('event log on NATS JetStream', () => {
  describeLogContract('nats jetstream', async (namespace, { tinyRetention }) => {
    // JetStream discards single messages (not segments): a few kB or a few dozen entries show retention at once.
    const log = tinyRetention ? { maxBytes: 8_000, maxMessages: 40 } : {};
    const transport = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace, log });
    await transport.start();
    return {
      log: transport.log!,
      publish: (messages) => transport.publish(messages),
      cleanup: async () => {
        await transport.close();
        await deleteNatsNamespace(TEST_NATS_URL, namespace);
      },
    };
  });
});
