import { createLogger } from '@tributary/core';
import { RabbitMqTransport } from '@tributary/core/events';
import { describeTransportContract, servicesAvailable, TEST_AMQP_URL, waitFor } from '@tributary/core/testing';
import { describe, it } from 'vitest';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });

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

describe.skipIf(!(await servicesAvailable()))('RabbitMQ transport recovery', () => {
  it('re-declares its queue and consumes again when the broker cancels the consumer (queue deleted)', async () => {
    const namespace = `tc_${Math.random().toString(16).slice(2, 10)}`;
    const transport = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: namespace });
    await transport.start();
    const spec = { queue: `${namespace}.svc.cancel`, bindings: ['job.updated'], prefetch: 10, retryDelaysMs: [100] };
    const got: string[] = [];
    await transport.consume(spec, (d) => {
      got.push(d.body.toString());
      void d.ack();
    });
    await transport.publish([{ routingKey: 'job.updated', messageId: 'm1', body: Buffer.from('before') }]);
    await waitFor(() => got.length === 1, 5_000, 'the first message');

    const admin = new RabbitMqTransport({ url: TEST_AMQP_URL, namespace, logger, connectionName: `${namespace}-admin` });
    await admin.start();
    await admin.deleteQueue(spec); // the broker cancels our consumer: amqplib hands us null
    // Until the consumer has re-declared and re-bound its queue, events of its type are unroutable;
    // keep publishing until one gets through.
    let n = 0;
    await waitFor(
      async () => {
        await transport.publish([{ routingKey: 'job.updated', messageId: `m${++n}`, body: Buffer.from('after') }]);
        await new Promise((r) => setTimeout(r, 100));
        return got.includes('after');
      },
      15_000,
      'a message after the cancel',
    );

    await admin.deleteQueue(spec);
    await admin.deleteExchange();
    await admin.close();
    await transport.close();
  });
});
