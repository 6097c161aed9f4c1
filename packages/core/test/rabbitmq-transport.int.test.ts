import { createLogger } from '@tributary/core';
import { RabbitMqTransport } from '@tributary/core/events';
import { describeTransportContract, servicesAvailable, TEST_AMQP_URL } from '@tributary/core/testing';
import { describe } from 'vitest';

const logger = createLogger({ service: 'test', level: 'silent' });

describe.skipIf(!(await servicesAvailable()))('RabbitMQ transport', () => {
  describeTransportContract('rabbitmq', async (namespace) => {
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace });
    return {
      transport,
      cleanup: async (specs) => {
        // A fresh connection: the test may have closed the transport already.
        const admin = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: `${namespace}-admin` });
        await admin.start();
        for (const spec of specs) await admin.deleteQueue(spec);
        await admin.deleteExchange();
        await admin.close();
        await transport.close();
      },
    };
  });
});
