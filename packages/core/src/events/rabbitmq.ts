import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { CoreErrorCode, TributaryError, errorMessage } from '../errors.ts';
import { coalesceWrites } from './amqplib-writes.ts';
import { replayHeaders } from './memory.ts';
import {
  attemptOf,
  deadLetterQueueName,
  exchangeName,
  failureHeaders,
  Headers,
  retryQueueName,
  type ConsumerHandle,
  type DeadLetter,
  type Delivery,
  type FailureInfo,
  type OutgoingMessage,
  type QueueSpec,
  type ReplayOptions,
  type Transport,
} from './transport.ts';

export interface RabbitMqTransportOptions {
  url: string;
  namespace: string;
  logger: Logger;
  /** Shown in the broker's connection list; tests use it to close exactly their connections. */
  connectionName?: string;
  /** How long publish() waits for broker confirms. Default 10 000 ms. */
  publishTimeoutMs?: number;
  /** `quorum` (replicated; the default) or `classic` for consumer queues and DLQs. */
  queueType?: 'quorum' | 'classic';
  /**
   * Quorum queues only: deliveries of one message before the broker dead-letters it itself.
   * Catches a message that kills its consumer before any ack (no handler ever sees a failure).
   * Default 20.
   */
  deliveryLimit?: number;
  /** Reconnect backoff. Defaults: 100 ms doubling to 10 s, 30% jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number; jitter?: number; initialMaxRetries?: number };
}

/**
 * Acks a channel's deliveries with one `basic.ack(multiple)` per contiguous run of settled
 * delivery tags instead of one frame (and one socket write) per message. Tags grow
 * monotonically per channel, so a delivery still being handled holds back only the acks
 * of later ones, for as long as it takes.
 */
class AckCoalescer {
  private readonly outstanding: ConsumeMessage[] = [];
  private head = 0;
  private readonly settled = new Set<number>();
  private scheduled = false;

  constructor(private readonly channel: Channel) {}

  track(message: ConsumeMessage): void {
    this.outstanding.push(message);
  }

  ack(message: ConsumeMessage): void {
    this.settled.add(message.fields.deliveryTag);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    let last: ConsumeMessage | undefined;
    while (this.head < this.outstanding.length && this.settled.delete(this.outstanding[this.head]!.fields.deliveryTag)) {
      last = this.outstanding[this.head++];
    }
    if (this.head > 1024) {
      this.outstanding.splice(0, this.head);
      this.head = 0;
    }
    if (!last) return;
    // If the channel died meanwhile the broker redelivers; the inbox makes that harmless.
    try {
      this.channel.ack(last, true);
    } catch {
      /* channel closed: redelivery follows */
    }
  }
}

/**
 * One delivery. A class, not an object of closures: a consumer creates one per message, and four
 * closures each (with the name-keeping wrapper tsx adds to every function) cost more than the
 * rest of the hand-off.
 */
class RabbitMqDelivery implements Delivery {
  readonly body: Buffer;
  readonly messageId: string | undefined;
  readonly routingKey: string;
  readonly headers: Record<string, unknown>;
  readonly attempt: number;
  readonly redelivered: boolean;
  private settled = false;

  constructor(
    private readonly transport: RabbitMqTransport,
    private readonly acks: AckCoalescer,
    private readonly spec: QueueSpec,
    private readonly message: ConsumeMessage,
  ) {
    const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
    const original = headers[Headers.routingKey];
    this.body = message.content;
    this.messageId = message.properties.messageId as string | undefined;
    this.routingKey = typeof original === 'string' ? original : message.fields.routingKey;
    this.headers = headers;
    this.attempt = attemptOf(headers);
    this.redelivered = message.fields.redelivered;
  }

  async ack(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.acks.ack(this.message);
  }

  retry(tier: number, failure: FailureInfo): Promise<void> {
    const tiers = this.spec.retryDelaysMs.length;
    if (tiers === 0) return this.forward(this.spec.queue, failure);
    return this.forward(retryQueueName(this.spec.queue, Math.min(Math.max(tier, 0), tiers - 1)), failure);
  }

  deadLetter(failure: FailureInfo): Promise<void> {
    return this.forward(deadLetterQueueName(this.spec.queue), failure);
  }

  private async forward(queue: string, failure: FailureInfo): Promise<void> {
    if (this.settled) return;
    await this.transport.sendToQueue(queue, {
      body: this.body,
      messageId: this.messageId,
      headers: { ...this.headers, ...failureHeaders(this.spec.queue, this.routingKey, this.attempt, failure) },
    });
    await this.ack();
  }
}

interface RegisteredConsumer {
  spec: QueueSpec;
  onDelivery: (delivery: Delivery) => void;
  channel?: Channel;
  consumerTag?: string;
  cancelled: boolean;
  /** Subscribed at least once: the next subscription is a resubscription. */
  subscribed?: boolean;
}

/**
 * RabbitMQ transport over amqplib: one durable topic exchange, a durable (quorum) queue per
 * consumer with TTL retry tiers and a DLQ, publisher confirms, and automatic recovery: after a
 * lost connection amqplib reconnects with backoff and jitter, and {@link setup} re-declares the
 * topology and re-subscribes every consumer on the new connection.
 */
export class RabbitMqTransport implements Transport {
  readonly kind = 'rabbitmq' as const;
  readonly namespace: string;
  private connection?: RecoveringChannelModel;
  private model: ChannelModel | undefined;
  private publishChannel: Promise<ConfirmChannel> | undefined;
  private readonly consumers = new Set<RegisteredConsumer>();
  private readonly log: Logger;
  private readonly publishTimeoutMs: number;
  private closing = false;
  private readonly connectedWaiters: (() => void)[] = [];

  constructor(private readonly options: RabbitMqTransportOptions) {
    this.namespace = options.namespace;
    this.log = options.logger.child({ component: 'rabbitmq' });
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
  }

  async start(): Promise<void> {
    const r = this.options.reconnect ?? {};
    const connection = await connect(this.options.url, {
      // Nagle's algorithm holds small frames (acks, confirms) back for tens of milliseconds
      // waiting for more; every hop of the pipeline would pay that.
      noDelay: true,
      clientProperties: { connection_name: this.options.connectionName ?? `${this.namespace}.${process.pid}` },
      recovery: {
        initialDelay: r.initialDelayMs ?? 100,
        maxDelay: r.maxDelayMs ?? 10_000,
        jitter: r.jitter ?? 0.3,
        initialMaxRetries: r.initialMaxRetries ?? 5,
        waitForConnect: false,
        setup: (model: ChannelModel) => this.setup(model),
      },
    });
    this.connection = connection;
    connection.on('disconnect', (error: Error) => {
      this.model = undefined;
      this.publishChannel = undefined;
      for (const c of this.consumers) delete c.channel;
      this.log.warn({ err: errorMessage(error) }, 'broker connection lost; reconnecting');
    });
    connection.on('reconnect-scheduled', (info: { attempt: number; delay: number }) =>
      this.log.info({ attempt: info.attempt, delayMs: info.delay }, 'broker reconnect scheduled'),
    );
    connection.on('reconnect-failed', (error: Error) => this.log.error({ err: errorMessage(error) }, 'broker reconnect gave up'));
    connection.on('error', (error: Error) => this.log.warn({ err: errorMessage(error) }, 'broker connection error'));
    await connection.waitForConnect();
  }

  isReady(): boolean {
    return this.model !== undefined && !this.closing;
  }

  /** Runs on every (re)connection before it is handed out: topology, then every consumer. */
  private async setup(model: ChannelModel): Promise<void> {
    coalesceWrites(model);
    const channel = await model.createChannel();
    await channel.assertExchange(exchangeName(this.namespace), 'topic', { durable: true });
    await channel.close();
    this.model = model;
    this.publishChannel = undefined;
    for (const consumer of this.consumers) {
      if (!consumer.cancelled) await this.subscribe(model, consumer);
    }
    if (this.consumers.size > 0 || this.connectedWaiters.length > 0) this.log.info('broker connected');
    for (const resolve of this.connectedWaiters.splice(0)) resolve();
  }

  private queueArguments(spec: QueueSpec): Options.AssertQueue {
    if (spec.exclusive) return { exclusive: true, autoDelete: true, durable: false };
    if ((this.options.queueType ?? 'quorum') === 'classic') return { durable: true };
    return {
      durable: true,
      arguments: {
        'x-queue-type': 'quorum',
        'x-delivery-limit': this.options.deliveryLimit ?? 20,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': deadLetterQueueName(spec.queue),
      },
    };
  }

  private async declareQueue(channel: Channel, spec: QueueSpec): Promise<void> {
    await channel.assertQueue(spec.queue, this.queueArguments(spec));
    // An exclusive queue's helpers expire on their own: nobody would ever delete them.
    const expires = spec.exclusive ? { 'x-expires': Math.max(60_000, 4 * Math.max(0, ...spec.retryDelaysMs)) } : {};
    const dlqArgs: Options.AssertQueue = spec.exclusive
      ? { durable: false, arguments: expires }
      : (this.options.queueType ?? 'quorum') === 'quorum'
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
    for (const binding of spec.bindings) await channel.bindQueue(spec.queue, exchangeName(this.namespace), binding);
  }

  private async subscribe(model: ChannelModel, consumer: RegisteredConsumer): Promise<void> {
    const channel = await model.createChannel();
    consumer.channel = channel;
    channel.on('error', (error: Error) => this.log.warn({ queue: consumer.spec.queue, err: errorMessage(error) }, 'consumer channel error'));
    channel.on('close', () => {
      if (consumer.channel !== channel) return;
      delete consumer.channel;
      // The channel died but the connection lives (queue deleted, a cancel, a channel error):
      // subscribe again after a pause. A lost connection is handled by setup() instead.
      if (!consumer.cancelled && !this.closing && this.model === model) {
        setTimeout(() => {
          if (!consumer.cancelled && !this.closing && this.model === model && !consumer.channel) {
            this.subscribe(model, consumer).catch((error) =>
              this.log.error({ queue: consumer.spec.queue, err: errorMessage(error) }, 'resubscribe failed'),
            );
          }
        }, 1_000).unref();
      }
    });
    await this.declareQueue(channel, consumer.spec);
    await channel.prefetch(consumer.spec.prefetch);
    const acks = new AckCoalescer(channel);
    const { consumerTag } = await channel.consume(consumer.spec.queue, (message) => {
      // amqplib hands us null when the broker cancels the consumer (queue deleted, node lost).
      if (message === null) {
        this.log.warn({ queue: consumer.spec.queue }, 'consumer cancelled by the broker');
        channel.close().catch(() => {});
        return;
      }
      acks.track(message);
      consumer.onDelivery(new RabbitMqDelivery(this, acks, consumer.spec, message));
    });
    consumer.consumerTag = consumerTag;
    if (consumer.subscribed) consumer.spec.onResubscribed?.();
    consumer.subscribed = true;
  }

  async consume(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    const consumer: RegisteredConsumer = { spec, onDelivery, cancelled: false };
    this.consumers.add(consumer);
    const model = await this.currentModel();
    await this.subscribe(model, consumer);
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

  private confirmChannel(): Promise<ConfirmChannel> {
    if (!this.publishChannel) {
      const created = this.currentModel().then(async (model) => {
        const channel = await model.createConfirmChannel();
        channel.on('error', (error: Error) => this.log.warn({ err: errorMessage(error) }, 'publish channel error'));
        channel.on('close', () => {
          if (this.publishChannel === created) this.publishChannel = undefined;
        });
        channel.on('return', (message: ConsumeMessage) => {
          // Mandatory publish that no queue is bound for: the broker accepted it and says no
          // consumer is declared for this event type. That is a deployment fact, not a fault to
          // retry; make it visible.
          this.log.warn({ routingKey: message.fields.routingKey, messageId: message.properties.messageId }, 'event is unroutable: no queue is bound for its type');
        });
        return channel;
      });
      created.catch(() => {
        if (this.publishChannel === created) this.publishChannel = undefined;
      });
      this.publishChannel = created;
    }
    return this.publishChannel;
  }

  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const channel = await this.confirmChannel();
    const exchange = exchangeName(this.namespace);
    await this.confirmAll(channel, messages, (message, callback) =>
      channel.publish(exchange, message.routingKey, message.body, this.publishOptions(message, true), callback),
    );
  }

  /** A message straight to `queue` with confirms (retry and dead-letter copies of a delivery). */
  async sendToQueue(queue: string, message: { body: Buffer; messageId: string | undefined; headers: Record<string, unknown> }): Promise<void> {
    const channel = await this.confirmChannel();
    await this.confirmAll(channel, [message], (m, callback) => channel.sendToQueue(queue, m.body, this.publishOptions(m, false), callback));
  }

  private publishOptions(message: { messageId?: string | undefined; routingKey?: string; headers?: Record<string, unknown> }, mandatory: boolean): Options.Publish {
    const options: Options.Publish = { persistent: true, mandatory, contentType: 'application/cloudevents+json' };
    if (message.messageId) options.messageId = message.messageId;
    if (message.routingKey) options.type = message.routingKey;
    if (message.headers) options.headers = message.headers;
    return options;
  }

  /** Publish each message with a confirm callback, honouring backpressure; resolve when all are acked. */
  private confirmAll<M>(channel: ConfirmChannel, messages: readonly M[], send: (message: M, callback: (error: unknown) => void) => boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let pending = messages.length;
      let failed = false;
      const fail = (error: TributaryError) => {
        if (failed) return;
        failed = true;
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `broker did not confirm ${pending} of ${messages.length} messages within ${this.publishTimeoutMs} ms`)),
        this.publishTimeoutMs,
      );
      const callback = (error: unknown) => {
        if (error) {
          fail(new TributaryError(CoreErrorCode.PUBLISH_NACKED, `broker refused a message: ${errorMessage(error)}`, { cause: error }));
          return;
        }
        if (--pending === 0 && !failed) {
          clearTimeout(timer);
          resolve();
        }
      };
      const sendFrom = (index: number) => {
        for (let i = index; i < messages.length; i++) {
          if (failed) return;
          let writable: boolean;
          try {
            writable = send(messages[i]!, callback);
          } catch (error) {
            fail(new TributaryError(CoreErrorCode.PUBLISH_NACKED, `publish failed: ${errorMessage(error)}`, { cause: error }));
            return;
          }
          if (!writable && i + 1 < messages.length) {
            channel.once('drain', () => sendFrom(i + 1));
            return;
          }
        }
      };
      sendFrom(0);
    });
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
    return this.withChannel(async (channel) => {
      const result: DeadLetter[] = [];
      // Messages taken with get() stay unacked until the channel closes, which puts them back:
      // a read that leaves the DLQ as it was.
      while (result.length < limit) {
        const message = await channel.get(deadLetterQueueName(queue), { noAck: false });
        if (!message) break;
        result.push({
          messageId: message.properties.messageId as string | undefined,
          routingKey: String((message.properties.headers ?? {})[Headers.routingKey] ?? message.fields.routingKey),
          headers: { ...(message.properties.headers ?? {}) },
          body: message.content,
        });
      }
      return result;
    });
  }

  async replayDeadLetters(queue: string, options: ReplayOptions = {}): Promise<number> {
    const wanted = options.messageIds ? new Set(options.messageIds) : undefined;
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    return this.withChannel(async (channel) => {
      await channel.checkQueue(queue).catch((error: unknown) => {
        throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`, { cause: error });
      });
      let moved = 0;
      while (moved < limit) {
        const message = await channel.get(deadLetterQueueName(queue), { noAck: false });
        if (!message) break;
        const id = message.properties.messageId as string | undefined;
        if (wanted && (id === undefined || !wanted.has(id))) continue; // left unacked: back on close
        const headers = replayHeaders({ ...(message.properties.headers ?? {}) }) as Record<string, string | number>;
        await this.confirmAll(channel, [message], (m, callback) =>
          channel.sendToQueue(queue, m.content, this.publishOptions({ messageId: id, headers }, false), callback),
        );
        channel.ack(message);
        moved++;
        options.onMoved?.();
      }
      return moved;
    });
  }

  async queueDepth(queue: string): Promise<number> {
    return this.withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
  }

  /** Delete a consumer queue with its retry tiers and DLQ (test clean-up, decommissioning). */
  async deleteQueue(spec: Pick<QueueSpec, 'queue' | 'retryDelaysMs'>): Promise<void> {
    await this.withChannel(async (channel) => {
      await channel.deleteQueue(spec.queue);
      await channel.deleteQueue(deadLetterQueueName(spec.queue));
      for (let tier = 0; tier < spec.retryDelaysMs.length; tier++) await channel.deleteQueue(retryQueueName(spec.queue, tier));
    });
  }

  /** Delete the events exchange (test clean-up). */
  async deleteExchange(): Promise<void> {
    await this.withChannel((channel) => channel.deleteExchange(exchangeName(this.namespace)).then(() => undefined));
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const consumer of this.consumers) consumer.cancelled = true;
    for (const waiter of this.connectedWaiters.splice(0)) waiter();
    await this.connection?.close().catch(() => {});
    this.model = undefined;
  }
}

/** Delete every queue named `<namespace>.…` and the events exchange (test clean-up). */
export async function deleteNamespace(url: string, namespace: string, queues: readonly string[]): Promise<void> {
  const connection = await connect(url);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    for (const queue of queues) if (queue.startsWith(`${namespace}.`)) await channel.deleteQueue(queue);
    await channel.deleteExchange(exchangeName(namespace));
  } finally {
    await connection.close().catch(() => {});
  }
}
