import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { DEFAULT_EVENT_LOG_RETENTION, parseLogRetention } from '../config.ts';
import { CoreErrorCode, TributaryError, errorMessage } from '../errors.ts';
import { NatsEventLog } from './log-nats.ts';
import { NatsDeadLetters } from './nats-dead-letters.ts';
import { toNatsHeaders } from './nats-headers.ts';
import { natsNames, natsToken, type NatsLogOptions, type NatsNames, type NatsTransportOptions } from './nats-options.ts';
import { NatsQueue } from './nats-queue.ts';
import { dlqStreamConfig, ensureStream, eventsStreamConfig, retryStreamConfig } from './nats-streams.ts';
import type { ConsumerHandle, DeadLetter, Delivery, OutgoingMessage, QueueSpec, ReplayOptions, Transport } from './transport.ts';

export type { NatsLogOptions, NatsTransportOptions } from './nats-options.ts';

/** The settings' default: a tool or test that gives none must not be the first to create the stream with other limits. */
function defaultRetention(): NatsLogOptions {
  const parsed = parseLogRetention(DEFAULT_EVENT_LOG_RETENTION);
  return typeof parsed === 'string' ? {} : parsed;
}

/** One publish request's own timeout; a publish tries again within its whole timeout. */
const PUBLISH_ATTEMPT_MS = 2_000;

/**
 * No answer (timeout) or nobody to answer yet: right after a server restart the connection is
 * back before JetStream is, and a publish gets "no responders" (the client says
 * JetStreamNotEnabled). Worth another try within the publish's timeout.
 */
function isTransient(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (e.name === 'TimeoutError' || e.name === 'NoRespondersError' || e.name === 'JetStreamNotEnabled' || /timeout|no responders/i.test(e.message)) return true;
  }
  return false;
}

const servers = (url: string) =>
  url
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * NATS JetStream transport: an events stream (`nats-streams.ts`) every publish goes to with its
 * event id as `Nats-Msg-Id`, a durable pull consumer per queue with a retry consumer beside it
 * (`nats-queue.ts`), a DLQ stream (`nats-dead-letters.ts`), and the events stream as the log
 * (`log-nats.ts`). The client reconnects by itself for ever; durables live in the server's file
 * store, so consumers carry on after a server restart.
 */
export class NatsJetStreamTransport implements Transport {
  readonly kind = 'nats' as const;
  readonly namespace: string;
  readonly log: NatsEventLog | undefined;
  private readonly names: NatsNames;
  private readonly logger: Logger;
  private readonly publishTimeoutMs: number;
  private readonly retention: NatsLogOptions | false;
  private readonly deadLetters: NatsDeadLetters;
  private readonly queues = new Set<NatsQueue>();
  private connection: NatsConnection | undefined;
  private jsClient: JetStreamClient | undefined;
  private manager: JetStreamManager | undefined;
  private connected = false;
  private closed = false;

  constructor(private readonly options: NatsTransportOptions) {
    this.namespace = options.namespace;
    this.names = natsNames(options.namespace);
    this.logger = options.logger.child({ component: 'nats' });
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.retention = options.log === false ? false : (options.log ?? defaultRetention());
    this.deadLetters = new NatsDeadLetters(this.names, () => this.js(), () => this.jsm());
    this.log = options.log === false ? undefined : new NatsEventLog({ stream: this.names.eventsStream, prefix: this.names.eventPrefix, js: () => this.js(), jsm: () => this.jsm() });
  }

  async start(): Promise<void> {
    if (this.closed) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the NATS transport is closed');
    const nc = await connect({ servers: servers(this.options.url), name: this.options.connectionName ?? this.namespace, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    this.connection = nc;
    this.connected = true;
    void this.watch(nc);
    this.jsClient = jetstream(nc, { timeout: this.publishTimeoutMs });
    this.manager = await jetstreamManager(nc, { timeout: this.publishTimeoutMs });
    await ensureStream(this.manager, eventsStreamConfig(this.names, this.retention), this.logger);
    await ensureStream(this.manager, retryStreamConfig(this.names), this.logger);
    await ensureStream(this.manager, dlqStreamConfig(this.names), this.logger);
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') {
        this.connected = false;
        this.logger.warn({ server: status.server }, 'NATS connection lost: reconnecting');
      } else if (status.type === 'reconnect') {
        this.connected = true;
        this.logger.info({ server: status.server }, 'NATS connection back');
      }
    }
  }

  private js(): JetStreamClient {
    if (this.closed || !this.jsClient) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, this.closed ? 'the NATS transport is closed' : 'the NATS transport is not started');
    return this.jsClient;
  }

  private jsm(): JetStreamManager {
    if (this.closed || !this.manager) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, this.closed ? 'the NATS transport is closed' : 'the NATS transport is not started');
    return this.manager;
  }

  /**
   * Resolves when JetStream acked every message (stored in the stream): that is the confirm.
   * A publish while disconnected is buffered by the client and sent on reconnection; past the
   * timeout it rejects, the outbox keeps its rows, and the `Nats-Msg-Id` makes the stream drop
   * the copy a later retry sends if the first one landed after all.
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    this.js();
    if (messages.length === 0) return;
    const deadline = Date.now() + this.publishTimeoutMs;
    try {
      await Promise.all(messages.map((m) => this.publishOne(m, deadline)));
    } catch (error) {
      if (this.closed) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the NATS transport closed during a publish', { cause: error });
      if (isTransient(error)) throw new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `JetStream did not ack ${messages.length} message(s) within ${this.publishTimeoutMs} ms`, { cause: error });
      throw new TributaryError(CoreErrorCode.PUBLISH_NACKED, `JetStream refused a publish: ${errorMessage(error)}`, { cause: error });
    }
  }

  /**
   * One message, tried again until the deadline when the request got no answer: a request sent
   * just as the server went away, or before JetStream was back after a restart, is never
   * answered. Safe to repeat: the `Nats-Msg-Id` makes the stream keep one copy.
   */
  private async publishOne(m: OutgoingMessage, deadline: number): Promise<void> {
    const subject = `${this.names.eventPrefix}${m.routingKey}`;
    for (;;) {
      const left = deadline - Date.now();
      try {
        await this.js().publish(subject, m.body, { msgID: m.messageId, headers: toNatsHeaders(m.headers), timeout: Math.max(1, Math.min(left, PUBLISH_ATTEMPT_MS)) });
        return;
      } catch (error) {
        if (this.closed || !isTransient(error) || deadline - Date.now() <= 0) throw error;
        await new Promise((r) => setTimeout(r, Math.min(100, Math.max(0, deadline - Date.now()))));
      }
    }
  }

  async consume(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    this.js();
    const queue = new NatsQueue(
      spec,
      {
        names: this.names,
        logger: this.logger,
        js: () => this.js(),
        jsm: () => this.jsm(),
        ackWaitMs: this.options.ackWaitMs ?? 30_000,
        deliveryLimit: this.options.deliveryLimit ?? 20,
        exclusiveInactiveMs: this.options.exclusiveInactiveMs ?? 5_000,
      },
      onDelivery,
    );
    await queue.open();
    this.queues.add(queue);
    return {
      cancel: () => queue.cancel(),
      close: async () => {
        this.queues.delete(queue);
        await queue.close();
      },
    };
  }

  listDeadLetters(queue: string, limit: number): Promise<DeadLetter[]> {
    return this.deadLetters.list(queue, limit);
  }

  replayDeadLetters(queue: string, options: ReplayOptions = {}): Promise<number> {
    return this.deadLetters.replay(queue, options, this.publishTimeoutMs);
  }

  /** A queue's messages not yet handed out (its consumer's num_pending); for `<queue>.dlq`, its dead letters. */
  async queueDepth(queue: string): Promise<number> {
    if (queue.endsWith('.dlq')) return this.deadLetters.depth(queue.slice(0, -'.dlq'.length));
    const info = await this.jsm()
      .consumers.info(this.names.eventsStream, natsToken(queue))
      .catch((error: unknown) => {
        throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`, { cause: error });
      });
    return info.num_pending;
  }

  isReady(): boolean {
    return !this.closed && this.connected && this.connection !== undefined && !this.connection.isClosed();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.queues].map((q) => q.close()));
    this.queues.clear();
    this.closed = true;
    await this.connection?.drain().catch(() => this.connection?.close());
  }
}

/** Delete every stream and consumer of a namespace (tests, decommissioning). */
export async function deleteNatsNamespace(url: string, namespace: string): Promise<void> {
  const names = natsNames(namespace);
  const nc = await connect({ servers: servers(url), name: `${namespace}-cleanup` });
  try {
    const jsm = await jetstreamManager(nc);
    for (const stream of [names.eventsStream, names.retryStream, names.dlqStream]) await jsm.streams.delete(stream).catch(() => false);
  } finally {
    await nc.close();
  }
}
