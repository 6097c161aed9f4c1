import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { AckCoalescer, RabbitMqDelivery, type QueueSender } from './rabbitmq-delivery.ts';
import type { RabbitMqTransportOptions } from './rabbitmq-options.ts';
import { declareQueue } from './rabbitmq-topology.ts';
import type { ConsumerHandle, Delivery, QueueSpec } from './transport.ts';

/** A consumer as the transport keeps it across channels and connections. */
export interface RegisteredConsumer {
  spec: QueueSpec;
  onDelivery: (delivery: Delivery) => void;
  channel?: Channel;
  consumerTag?: string;
  cancelled: boolean;
  /** Subscribed at least once: the next subscription is a resubscription. */
  subscribed?: boolean;
}

/** What the consumers need from their transport. */
export interface RabbitMqConsumersContext {
  namespace: string;
  options: RabbitMqTransportOptions;
  log: Logger;
  /** Sends the deliveries' retry and dead-letter copies. */
  sender: QueueSender;
  /** Whether `model` is still the transport's connection and the transport is not closing. */
  isCurrent: (model: ChannelModel) => boolean;
}

/**
 * The transport's consumers: each on a channel of its own with its queue declared, its
 * deliveries handed on, and subscribed again when its channel or connection was lost.
 */
export class RabbitMqConsumers {
  private readonly consumers = new Set<RegisteredConsumer>();

  constructor(private readonly context: RabbitMqConsumersContext) {}

  get size(): number {
    return this.consumers.size;
  }

  /** Add a consumer: from now on every new connection subscribes it ({@link subscribeAll}). */
  register(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): RegisteredConsumer {
    const consumer: RegisteredConsumer = { spec, onDelivery, cancelled: false };
    this.consumers.add(consumer);
    return consumer;
  }

  /** A new connection: every consumer not cancelled subscribes on it. */
  async subscribeAll(model: ChannelModel): Promise<void> {
    for (const consumer of this.consumers) {
      if (!consumer.cancelled) await this.subscribe(model, consumer);
    }
  }

  /** The connection is lost, and every channel with it. */
  dropChannels(): void {
    for (const c of this.consumers) delete c.channel;
  }

  /** The transport closes: no consumer subscribes again. */
  cancelAll(): void {
    for (const consumer of this.consumers) consumer.cancelled = true;
  }

  async subscribe(model: ChannelModel, consumer: RegisteredConsumer): Promise<void> {
    const { log, isCurrent, sender } = this.context;
    const channel = await model.createChannel();
    consumer.channel = channel;
    channel.on('error', (error: Error) => log.warn({ queue: consumer.spec.queue, err: errorMessage(error) }, 'consumer channel error'));
    channel.on('close', () => {
      if (consumer.channel !== channel) return;
      delete consumer.channel;
      // The channel died but the connection lives (queue deleted, a cancel, a channel error):
      // subscribe again after a pause. A lost connection is handled by setup() instead.
      if (!consumer.cancelled && isCurrent(model)) {
        setTimeout(() => {
          if (!consumer.cancelled && isCurrent(model) && !consumer.channel) {
            this.subscribe(model, consumer).catch((error) => log.error({ queue: consumer.spec.queue, err: errorMessage(error) }, 'resubscribe failed'));
          }
        }, 1_000).unref();
      }
    });
    await declareQueue(channel, this.context.namespace, consumer.spec, this.context.options);
    await channel.prefetch(consumer.spec.prefetch);
    const acks = new AckCoalescer(channel);
    const { consumerTag } = await channel.consume(consumer.spec.queue, (message) => {
      // amqplib hands us null when the broker cancels the consumer (queue deleted, node lost).
      if (message === null) {
        log.warn({ queue: consumer.spec.queue }, 'consumer cancelled by the broker');
        channel.close().catch(() => {});
        return;
      }
      acks.track(message);
      consumer.onDelivery(new RabbitMqDelivery(sender, acks, consumer.spec, message));
    });
    consumer.consumerTag = consumerTag;
    if (consumer.subscribed) consumer.spec.onResubscribed?.();
    consumer.subscribed = true;
  }

  /** The consumer's handle: cancel stops its deliveries, close also hands back what it holds. */
  handle(consumer: RegisteredConsumer): ConsumerHandle {
    const cancel = async () => {
      consumer.cancelled = true;
      const { channel, consumerTag } = consumer;
      if (channel && consumerTag) await channel.cancel(consumerTag).catch(() => {});
    };
    return {
      cancel,
      close: async () => {
        await cancel();
        this.consumers.delete(consumer);
        const channel = consumer.channel;
        delete consumer.channel;
        // Closing the channel returns every unacked delivery to the queue.
        if (channel) await channel.close().catch(() => {});
      },
    };
  }
}
