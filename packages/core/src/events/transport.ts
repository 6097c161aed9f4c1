/**
 * The one interface every event transport implements (RabbitMQ, Redis Streams, NATS JetStream,
 * in-memory). The consumer and the outbox relay only speak this; `testing/transport-contract.ts`
 * holds the suite all of them pass.
 */

import type { EventLog } from './log.ts';

/** A message to publish to the events exchange; `routingKey` is the event type. */
export interface OutgoingMessage {
  routingKey: string;
  body: Buffer;
  /** The event id, also the broker message id. */
  messageId: string;
  headers?: Record<string, string | number>;
}

/** Why a delivery failed, written into the headers of its retry or dead-letter copy. */
export interface FailureInfo {
  code: string;
  message: string;
}

/** Header names the transports use on retry and dead-letter copies. */
export const Headers = {
  /** Failed attempts so far (0 or absent on the first delivery). */
  attempt: 'x-tributary-attempt',
  /** The routing key the event was first published with (retry/DLQ hops go to a queue directly). */
  routingKey: 'x-tributary-routing-key',
  errorCode: 'x-tributary-error-code',
  errorMessage: 'x-tributary-error-message',
  failedAt: 'x-tributary-failed-at',
  queue: 'x-tributary-queue',
  /** When the event was written to its outbox, ms since the epoch: how old a backlog is. */
  time: 'x-tributary-time',
} as const;

/** One received message. Exactly one of ack / retry / deadLetter settles it. */
export interface Delivery {
  readonly body: Buffer;
  readonly messageId: string | undefined;
  /** The original routing key (the event type), also after a retry hop. */
  readonly routingKey: string;
  readonly headers: Readonly<Record<string, unknown>>;
  /** 1 on the first attempt, n after n-1 failures sent it through the retry tiers. */
  readonly attempt: number;
  /** The broker delivered it before (e.g. a consumer died before its ack). */
  readonly redelivered: boolean;
  ack(): Promise<void>;
  /** Schedule attempt n+1 through retry tier `tier` (0-based, clamped to the last tier), then ack. */
  retry(tier: number, failure: FailureInfo): Promise<void>;
  /** Move to the dead-letter queue with the failure in its headers, then ack. */
  deadLetter(failure: FailureInfo): Promise<void>;
}

export interface QueueSpec {
  /** Full queue name, e.g. `tributary.analysis.document-uploaded`. */
  queue: string;
  /** Routing keys (event types; `*` and `#` wildcards allowed) bound to the events exchange. */
  bindings: readonly string[];
  /** At most this many unacknowledged deliveries at once. */
  prefetch: number;
  /** Delay of each retry tier, in ms: tier n is queue `<queue>.retry.<n+1>`. */
  retryDelaysMs: readonly number[];
  /** One consumer only, deleted with its connection (a gateway instance's own queue). */
  exclusive?: boolean;
  /**
   * Called each time the transport subscribes this consumer again after its channel or
   * connection was lost (not the first time). An exclusive queue goes with its connection:
   * whatever was published until it was declared again never reached it.
   */
  onResubscribed?: () => void;
}

export interface ConsumerHandle {
  /** Stop receiving new deliveries; deliveries already handed out can still be settled. */
  cancel(): Promise<void>;
  /** Cancel, and give every unsettled delivery back to the queue. */
  close(): Promise<void>;
}

export interface ReplayOptions {
  /** Only these event ids. */
  messageIds?: readonly string[];
  /** At most this many. */
  limit?: number;
  /** Called after each event moved back (progress displays). */
  onMoved?: () => void;
}

/** A dead-lettered event as the DLQ tools show it. */
export interface DeadLetter {
  messageId: string | undefined;
  routingKey: string;
  headers: Record<string, unknown>;
  body: Buffer;
}

export interface Transport {
  readonly kind: 'rabbitmq' | 'redis' | 'nats' | 'memory';
  readonly namespace: string;
  /** The retained log of everything published (`log.ts`); absent when the log is turned off. */
  readonly log?: EventLog | undefined;
  /** Connect and declare the events exchange. */
  start(): Promise<void>;
  /**
   * Publish to the events exchange. Resolves only when the broker has confirmed every message
   * (RabbitMQ publisher confirms); rejects on nack, timeout or a lost channel, so the caller keeps
   * the rows and tries again.
   */
  publish(messages: readonly OutgoingMessage[]): Promise<void>;
  /** Declare the queue (and its retry tiers and DLQ), bind it and start delivering. */
  consume(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): Promise<ConsumerHandle>;
  /** Up to `limit` dead letters of a queue, left in place. */
  listDeadLetters(queue: string, limit: number): Promise<DeadLetter[]>;
  /**
   * Move dead letters back to their queue with a fresh attempt count; only those whose message
   * id is in `messageIds` when given. Returns how many moved.
   */
  replayDeadLetters(queue: string, options?: ReplayOptions): Promise<number>;
  /** Count of messages ready in a queue (the DLQ tools and tests use it). */
  queueDepth(queue: string): Promise<number>;
  /** Whether the transport can publish right now (`/ready`). */
  isReady(): boolean;
  close(): Promise<void>;
}

/** `<ns>.events`: the one topic exchange. */
export const exchangeName = (namespace: string) => `${namespace}.events`;
/** `<ns>.<service>.<consumer>`: one durable queue per consumer. */
export const queueName = (namespace: string, service: string, consumer: string) => `${namespace}.${service}.${consumer}`;
export const retryQueueName = (queue: string, tier: number) => `${queue}.retry.${tier + 1}`;
export const deadLetterQueueName = (queue: string) => `${queue}.dlq`;

/** Topic-exchange matching: `*` is one word, `#` zero or more (AMQP 0-9-1 semantics). */
export function topicMatches(pattern: string, routingKey: string): boolean {
  const p = pattern.split('.');
  const k = routingKey.split('.');
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === '#') {
      for (let n = j; n <= k.length; n++) if (match(i + 1, n)) return true;
      return false;
    }
    if (j === k.length) return false;
    return (p[i] === '*' || p[i] === k[j]) && match(i + 1, j + 1);
  };
  return match(0, 0);
}

export function attemptOf(headers: Readonly<Record<string, unknown>>): number {
  const raw = headers[Headers.attempt];
  const failures = typeof raw === 'number' ? raw : typeof raw === 'string' ? Number.parseInt(raw, 10) : 0;
  return Number.isFinite(failures) && failures > 0 ? failures + 1 : 1;
}

export function failureHeaders(queue: string, routingKey: string, attempt: number, failure: FailureInfo): Record<string, string | number> {
  return {
    [Headers.attempt]: attempt,
    [Headers.routingKey]: routingKey,
    [Headers.errorCode]: failure.code,
    // Header tables are capped at 64 KiB by amqplib; a stack-sized message must not break the hop.
    [Headers.errorMessage]: failure.message.slice(0, 4000),
    [Headers.failedAt]: new Date().toISOString(),
    [Headers.queue]: queue,
  };
}
