import { connect, type Channel, type ChannelModel, type Options } from 'amqplib';
import type { RabbitMqTransportOptions } from './rabbitmq-options.ts';
import { deadLetterQueueName, exchangeName, retryQueueName, type QueueSpec } from './transport.ts';

type QueueOptions = Pick<RabbitMqTransportOptions, 'queueType' | 'deliveryLimit'>;

/** The one durable topic exchange `<ns>.events`, on a channel of its own. */
export async function declareExchange(model: ChannelModel, namespace: string): Promise<void> {
  const channel = await model.createChannel();
  await channel.assertExchange(exchangeName(namespace), 'topic', { durable: true });
  await channel.close();
}

function queueArguments(spec: QueueSpec, options: QueueOptions): Options.AssertQueue {
  if (spec.exclusive) return { exclusive: true, autoDelete: true, durable: false };
  if ((options.queueType ?? 'quorum') === 'classic') return { durable: true };
  return {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-delivery-limit': options.deliveryLimit ?? 20,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': deadLetterQueueName(spec.queue),
    },
  };
}

/** A consumer's queue, its DLQ and its retry tiers, and the queue's bindings to the events exchange. */
export async function declareQueue(channel: Channel, namespace: string, spec: QueueSpec, options: QueueOptions): Promise<void> {
  await channel.assertQueue(spec.queue, queueArguments(spec, options));
  // An exclusive queue's helpers expire on their own: nobody would ever delete them.
  const expires = spec.exclusive ? { 'x-expires': Math.max(60_000, 4 * Math.max(0, ...spec.retryDelaysMs)) } : {};
  const dlqArgs: Options.AssertQueue = spec.exclusive
    ? { durable: false, arguments: expires }
    : (options.queueType ?? 'quorum') === 'quorum'
      ? { durable: true, arguments: { 'x-queue-type': 'quorum' } }
      : { durable: true };
  await channel.assertQueue(deadLetterQueueName(spec.queue), dlqArgs);
  for (let tier = 0; tier < spec.retryDelaysMs.length; tier++) {
    // Classic queues: per-queue TTL then dead-lettering back through the default exchange.
    await channel.assertQueue(retryQueueName(spec.queue, tier), {
      durable: !spec.exclusive,
      arguments: {
        ...expires,
        'x-message-ttl': spec.retryDelaysMs[tier],
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': spec.queue,
      },
    });
  }
  for (const binding of spec.bindings) await channel.bindQueue(spec.queue, exchangeName(namespace), binding);
}

/** A consumer queue with its retry tiers and DLQ, deleted. */
export async function deleteQueues(channel: Channel, spec: Pick<QueueSpec, 'queue' | 'retryDelaysMs'>): Promise<void> {
  await channel.deleteQueue(spec.queue);
  await channel.deleteQueue(deadLetterQueueName(spec.queue));
  for (let tier = 0; tier < spec.retryDelaysMs.length; tier++) await channel.deleteQueue(retryQueueName(spec.queue, tier));
}

/** Delete every queue named `<namespace>.…`, the log's stream and the events exchange (test clean-up). */
export async function deleteNamespace(url: string, namespace: string, queues: readonly string[]): Promise<void> {
  const connection = await connect(url);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    for (const queue of queues) if (queue.startsWith(`${namespace}.`)) await channel.deleteQueue(queue);
    await channel.deleteQueue(`${namespace}.events.log`);
    await channel.deleteExchange(exchangeName(namespace));
  } finally {
    await connection.close().catch(() => {});
  }
}
