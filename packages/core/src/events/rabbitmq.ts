import type { ChannelModel, ConfirmChannel, RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { coalesceWrites } from './amqplib-writes.ts';
import { connectWithRecovery } from './rabbitmq-connection.ts';
import { RabbitMqConsumers } from './rabbitmq-consumers.ts';
import { listDeadLetters, replayDeadLetters } from './rabbitmq-dead-letters.ts';
import { DEFAULT_EVENT_LOG_RETENTION, parseLogRetention } from '../config.ts';
import { declareLogStream, logStreamName, RabbitMqEventLog, type RabbitMqLogOptions } from './log-rabbitmq.ts';
import type { RabbitMqTransportOptions } from './rabbitmq-options.ts';
import { ConfirmPublisher } from './rabbitmq-publish.ts';
import { declareExchange, deleteQueues } from './rabbitmq-topology.ts';
import { exchangeName, type ConsumerHandle, type DeadLetter, type Delivery, type OutgoingMessage, type QueueSpec, type ReplayOptions, type Transport } from './transport.ts';

export type { RabbitMqTransportOptions } from './rabbitmq-options.ts';

/** The settings' default: a tool or test that gives none must not be the first to declare the stream with other arguments. */
function defaultRetention(): RabbitMqLogOptions {
  const parsed = parseLogRetention(DEFAULT_EVENT_LOG_RETENTION);
  return typeof parsed === 'string' ? {} : parsed;
}
export { deleteNamespace } from './rabbitmq-topology.ts';

/**
 * RabbitMQ transport over amqplib: one durable topic exchange, a durable (quorum) queue per
 * consumer with TTL retry tiers and a DLQ, publisher confirms, and automatic recovery: after a
 * lost connection amqplib reconnects with backoff and jitter, and {@link setup} re-declares the
 * topology and re-subscribes every consumer on the new connection.
 *
 * Its parts: the connection with recovery (`rabbitmq-connection.ts`), the topology
 * (`rabbitmq-topology.ts`), publishing with confirms (`rabbitmq-publish.ts`), the consumers
 * (`rabbitmq-consumers.ts`) and their deliveries (`rabbitmq-delivery.ts`), and the DLQ tools
 * (`rabbitmq-dead-letters.ts`).
 */
export class RabbitMqTransport implements Transport {
  readonly kind = 'rabbitmq' as const;
  readonly namespace: string;
  /** The stream every publish also lands in; undefined when the options turn it off. */
  readonly log: RabbitMqEventLog | undefined;
  private connection?: RecoveringChannelModel;
  private model: ChannelModel | undefined;
  private readonly publisher: ConfirmPublisher;
  private readonly consumers: RabbitMqConsumers;
  private readonly logger: Logger;
  private readonly publishTimeoutMs: number;
  private closing = false;
  private readonly connectedWaiters: (() => void)[] = [];

  constructor(private readonly options: RabbitMqTransportOptions) {
    this.namespace = options.namespace;
    this.logger = options.logger.child({ component: 'rabbitmq' });
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.publisher = new ConfirmPublisher(() => this.currentModel(), this.namespace, this.logger, this.publishTimeoutMs);
    this.consumers = new RabbitMqConsumers({
      namespace: this.namespace,
      options,
      log: this.logger,
      sender: this,
      isCurrent: (model) => !this.closing && this.model === model,
    });
    this.log =
      options.log === false
        ? undefined
        : new RabbitMqEventLog({ namespace: this.namespace, logger: this.logger, model: () => this.currentModel(), sendToQueue: (queue, message) => this.sendToQueue(queue, message) });
  }

  async start(): Promise<void> {
    const connection = await connectWithRecovery(this.options, this.logger, {
      setup: (model) => this.setup(model),
      disconnected: () => {
        this.model = undefined;
        this.publisher.reset();
        this.consumers.dropChannels();
      },
    });
    this.connection = connection;
    await connection.waitForConnect();
  }

  isReady(): boolean {
    return this.model !== undefined && !this.closing;
  }

  /** Runs on every (re)connection before it is handed out: topology, then every consumer. */
  private async setup(model: ChannelModel): Promise<void> {
    coalesceWrites(model);
    await declareExchange(model, this.namespace);
    if (this.options.log !== false) await declareLogStream(model, this.namespace, this.options.log ?? defaultRetention(), this.logger);
    this.model = model;
    this.publisher.reset();
    await this.consumers.subscribeAll(model);
    if (this.consumers.size > 0 || this.connectedWaiters.length > 0) this.logger.info('broker connected');
    for (const resolve of this.connectedWaiters.splice(0)) resolve();
  }

  async consume(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    const consumer = this.consumers.register(spec, onDelivery);
    const model = await this.currentModel();
    await this.consumers.subscribe(model, consumer);
    return this.consumers.handle(consumer);
  }

  private async currentModel(): Promise<ChannelModel> {
    if (this.closing) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the RabbitMQ transport is closed');
    if (this.model) return this.model;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.connectedWaiters.indexOf(done);
        if (i >= 0) this.connectedWaiters.splice(i, 1);
        reject(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `broker not reachable within ${this.publishTimeoutMs} ms`));
      }, this.publishTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.connectedWaiters.push(done);
    });
    return this.currentModel();
  }

  publish(messages: readonly OutgoingMessage[]): Promise<void> {
    return this.publisher.publish(messages, this.log?.stream);
  }

  /** A message straight to `queue` with confirms (retry and dead-letter copies of a delivery). */
  sendToQueue(queue: string, message: { body: Buffer; messageId: string | undefined; headers: Record<string, unknown> }): Promise<void> {
    return this.publisher.sendToQueue(queue, message);
  }

  private async withChannel<T>(fn: (channel: ConfirmChannel) => Promise<T>): Promise<T> {
    const model = await this.currentModel();
    const channel = await model.createConfirmChannel();
    channel.on('error', () => {});
    try {
      return await fn(channel);
    } finally {
      await channel.close().catch(() => {});
    }
  }

  async listDeadLetters(queue: string, limit: number): Promise<DeadLetter[]> {
    return this.withChannel((channel) => listDeadLetters(channel, queue, limit));
  }

  async replayDeadLetters(queue: string, options: ReplayOptions = {}): Promise<number> {
    return this.withChannel((channel) => replayDeadLetters(channel, queue, options, this.publishTimeoutMs));
  }

  async queueDepth(queue: string): Promise<number> {
    return this.withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
  }

  /** Delete a consumer queue with its retry tiers and DLQ (test clean-up, decommissioning). */
  async deleteQueue(spec: Pick<QueueSpec, 'queue' | 'retryDelaysMs'>): Promise<void> {
    await this.withChannel((channel) => deleteQueues(channel, spec));
  }

  /** Delete the events exchange and the log's stream (test clean-up). */
  async deleteExchange(): Promise<void> {
    await this.withChannel(async (channel) => {
      await channel.deleteQueue(logStreamName(this.namespace));
      await channel.deleteExchange(exchangeName(this.namespace));
    });
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.consumers.cancelAll();
    for (const waiter of this.connectedWaiters.splice(0)) waiter();
    await this.connection?.close().catch(() => {});
    this.model = undefined;
  }
}
