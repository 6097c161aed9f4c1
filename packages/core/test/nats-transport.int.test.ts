import { createLogger } from '@tributary/core';
import { describeTransportContract, natsAvailable, TEST_NATS_URL } from '@tributary/core/testing';
import { describe } from 'vitest';
// Not yet exported from @tributary/core/events (the lead wires it there).
import { deleteNatsNamespace, NatsJetStreamTransport } from '../src/events/nats.ts';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

describe.skipIf(!(await natsAvailable()))('NATS JetStream transport', () => {
  describeTransportContract('nats', async (namespace) => {
    const transport = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace });
    return {
      transport,
      cleanup: async () => {
        await transport.close();
        await deleteNatsNamespace(TEST_NATS_URL, namespace);
      },
    };
  });
});
