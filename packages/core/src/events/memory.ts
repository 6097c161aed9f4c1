import { AsyncResource } from 'node:async_hooks';
import {
  attemptOf,
  deadLetterQueueName,
  failureHeaders,
  Headers,
  topicMatches,
  type ConsumerHandle,
  type DeadLetter,
  type Delivery,
  type FailureInfo,
  type OutgoingMessage,
  type QueueSpec,
  type ReplayOptions,
  type Transport,
} from './transport.ts';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import type { AppendableLog } from './log.ts';

interface StoredMessage {
  body: Buffer;
  messageId: string | undefined;
  routingKey: string;
  headers: Record<string, unknown>;
  redelivered: boolean;
}

interface MemoryConsumer {
  spec: QueueSpec;
  onDelivery: (delivery: Delivery) => void;
  unsettled: Map<number, StoredMessage>;
  active: boolean;
}

interface MemoryQueue {
  ready: StoredMessage[];
  bindings: Set<string>;
  consumers: MemoryConsumer[];
  next: number;
}

/**
 * The in-process bus used when `AMQP_URL` is unset (`pnpm dev`, embedded mode). It keeps the
 * broker's semantics that our code relies on: fan-out by routing key to every bound queue,
 * manual ack with redelivery of what a closed consumer left unsettled, bounded prefetch,
 * delayed retry tiers and a dead-letter queue. Bodies are copied, as on a wire.
 */
export class InMemoryTransport implements Transport {
  readonly kind = 'memory' as const;
  private readonly queues = new Map<string, MemoryQueue>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private nextTag = 0;

  constructor(
    readonly namespace: string,
    /** The log every publish is appended to first (embedded mode's table, or an array). */
    readonly log?: AppendableLog,
  ) {}

  async start(): Promise<void> {
    this.closed = false;
  }

  isReady(): boolean {
    return !this.closed;
  }

  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    this.assertOpen();
    // Logged before routed, as the RabbitMQ log writes its record before the exchange publish.
    await this.log?.append(messages);
    for (const message of messages) {
      for (const queue of this.queues.values()) {
        if (![...queue.bindings].some((pattern) => topicMatches(pattern, message.routingKey))) continue;
        queue.ready.push({
          body: Buffer.from(message.body),
          messageId: message.messageId,
          routingKey: message.routingKey,
          headers: { ...message.headers },
          redelivered: false,
        });
        this.dispatchSoon(queue);
      }
    }
  }

  async consume(spec: QueueSpec, handler: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    this.assertOpen();
    // Deliver in the consumer's async context, not the publisher's: over a real broker nothing
    // (trace, ORM transaction context) travels from publisher to consumer except the message.
    const onDelivery = AsyncResource.bind(handler);
    const queue = this.declare(spec.queue);
    this.declare(deadLetterQueueName(spec.queue));
    for (const binding of spec.bindings) queue.bindings.add(binding);
    if (spec.exclusive && queue.consumers.some((c) => c.active)) {
      throw new TributaryError('RESOURCE_LOCKED', `queue ${spec.queue} is exclusive to another consumer`);
    }
    const consumer: MemoryConsumer = { spec, onDelivery, unsettled: new Map(), active: true };
    queue.consumers.push(consumer);
    this.dispatchSoon(queue);
    const cancel = async () => {
      consumer.active = false;
    };
    return {
      cancel,
      close: async () => {
        await cancel();
        queue.consumers = queue.consumers.filter((c) => c !== consumer);
        // Like a broker closing a channel: unsettled messages go back to the head of the queue.
        const returned = [...consumer.unsettled.values()].map((m) => ({ ...m, redelivered: true }));
        consumer.unsettled.clear();
        queue.ready.unshift(...returned);
        if (spec.exclusive) this.queues.delete(spec.queue);
        else this.dispatchSoon(queue);
      },
    };
  }

  async listDeadLetters(queue: string, limit: number): Promise<DeadLetter[]> {
    const dlq = this.queues.get(deadLetterQueueName(queue));
    return (dlq?.ready ?? []).slice(0, limit).map((m) => ({
      messageId: m.messageId,
      routingKey: m.routingKey,
      headers: { ...m.headers },
      body: Buffer.from(m.body),
    }));
  }

  async replayDeadLetters(queue: string, options: ReplayOptions = {}): Promise<number> {
    const dlq = this.queues.get(deadLetterQueueName(queue));
    const target = this.queues.get(queue);
    if (!dlq || !target) throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`);
    const wanted = options.messageIds ? new Set(options.messageIds) : undefined;
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    const keep: StoredMessage[] = [];
    let moved = 0;
    for (const message of dlq.ready) {
      if (moved < limit && (!wanted || (message.messageId !== undefined && wanted.has(message.messageId)))) {
        target.ready.push({ ...message, headers: replayHeaders(message.headers), redelivered: false });
        moved++;
        options.onMoved?.();
      } else keep.push(message);
    }
    dlq.ready = keep;
    this.dispatchSoon(target);
    return moved;
  }

  async queueDepth(queue: string): Promise<number> {
    return this.queues.get(queue)?.ready.length ?? 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const queue of this.queues.values()) for (const c of queue.consumers) c.active = false;
  }

  private assertOpen(): void {
    if (this.closed) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the in-memory transport is closed');
  }

  private declare(name: string): MemoryQueue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = { ready: [], bindings: new Set(), consumers: [], next: 0 };
      this.queues.set(name, queue);
    }
    return queue;
  }

  private dispatchSoon(queue: MemoryQueue): void {
    // Deliver on a later tick, as a broker would: publish() never re-enters a handler.
    setImmediate(() => this.dispatch(queue));
  }

  private dispatch(queue: MemoryQueue): void {
    if (this.closed) return;
    let progressed = true;
    while (queue.ready.length > 0 && progressed) {
      progressed = false;
      // Round-robin over consumers with free prefetch capacity, like RabbitMQ.
      for (let i = 0; i < queue.consumers.length && queue.ready.length > 0; i++) {
        const consumer = queue.consumers[(queue.next + i) % queue.consumers.length]!;
        if (!consumer.active || consumer.unsettled.size >= consumer.spec.prefetch) continue;
        const message = queue.ready.shift()!;
        queue.next = (queue.next + i + 1) % queue.consumers.length;
        this.deliver(queue, consumer, message);
        progressed = true;
        break;
      }
    }
  }

  private deliver(queue: MemoryQueue, consumer: MemoryConsumer, message: StoredMessage): void {
    const tag = ++this.nextTag;
    consumer.unsettled.set(tag, message);
    let settled = false;
    const settle = (): boolean => {
      if (settled || !consumer.unsettled.has(tag)) return false;
      settled = true;
      consumer.unsettled.delete(tag);
      this.dispatchSoon(queue);
      return true;
    };
    const attempt = attemptOf(message.headers);
    const routingKey = typeof message.headers[Headers.routingKey] === 'string' ? (message.headers[Headers.routingKey] as string) : message.routingKey;
    const spec = consumer.spec;
    const delivery: Delivery = {
      body: Buffer.from(message.body),
      messageId: message.messageId,
      routingKey,
      headers: { ...message.headers },
      attempt,
      redelivered: message.redelivered,
      ack: async () => {
        settle();
      },
      retry: async (tier: number, failure: FailureInfo) => {
        if (!settle()) return;
        const delays = spec.retryDelaysMs;
        const delay = delays[Math.min(Math.max(tier, 0), delays.length - 1)] ?? 0;
        const copy: StoredMessage = {
          body: message.body,
          messageId: message.messageId,
          routingKey,
          headers: { ...message.headers, ...failureHeaders(spec.queue, routingKey, attempt, failure) },
          redelivered: false,
        };
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          const target = this.queues.get(spec.queue);
          if (!target) return;
          target.ready.push(copy);
          this.dispatch(target);
        }, delay);
        this.timers.add(timer);
      },
      deadLetter: async (failure: FailureInfo) => {
        if (!settle()) return;
        const dlq = this.declare(deadLetterQueueName(spec.queue));
        dlq.ready.push({
          body: message.body,
          messageId: message.messageId,
          routingKey,
          headers: { ...message.headers, ...failureHeaders(spec.queue, routingKey, attempt, failure) },
          redelivered: false,
        });
      },
    };
    consumer.onDelivery(delivery);
  }
}

/** Headers of a replayed dead letter: the failure stays for the record, the attempt count restarts. */
export function replayHeaders(headers: Record<string, unknown>): Record<string, unknown> {
  const { [Headers.attempt]: _attempt, ...rest } = headers;
  return { ...rest, 'x-tributary-replayed-at': new Date().toISOString() };
}
