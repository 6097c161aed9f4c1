import { randomUUID } from 'node:crypto';
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type ConsumerConfig, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { NatsDelivery, type DeliveryOwner } from './nats-delivery.ts';
import { fromNatsHeaders, payload, toNatsHeaders } from './nats-headers.ts';
import { bindingSubject, DUE_HEADER, MESSAGE_ID_HEADER, natsToken, type NatsNames } from './nats-options.ts';
import { Headers, topicMatches, type ConsumerHandle, type Delivery, type QueueSpec } from './transport.ts';

/** What a queue needs from its transport. */
export interface NatsQueueContext {
  names: NatsNames;
  logger: Logger;
  js(): JetStreamClient;
  jsm(): JetStreamManager;
  ackWaitMs: number;
  deliveryLimit: number;
  exclusiveInactiveMs: number;
}

/**
 * Retry copies wait on their consumer as nak'd deliveries, which JetStream counts as pending:
 * this bounds how many retries can be scheduled at once before later ones wait for earlier
 * ones to come due (they are not lost, only late).
 */
const RETRY_MAX_PENDING = 1_000;

/**
 * How long each pull request lives on the server. A stopped consumer cannot take back the pull
 * it has out: until it expires the server may still send it a message, finds no one listening
 * and puts the message back, and 2.9 then also takes that delivery off its count. Short pulls
 * bound that window; see {@link NatsDelivery.release}.
 */
export const PULL_EXPIRES_MS = 2_000;



/**
 * One queue: a pull consumer on the events stream (the queue proper) and one on the retry
 * stream (its retry tiers), sharing one prefetch. Several processes consuming the same durable
 * share its messages (competing consumers).
 */
export class NatsQueue implements DeliveryOwner, ConsumerHandle {
  /** The consumer name on both streams (names may not contain `.`). */
  readonly consumer: string;
  private readonly handedOut = new Map<JsMsg, NatsDelivery>();
  /** Taken from JetStream but waiting for a free prefetch slot. */
  private readonly holding = new Set<JsMsg>();
  private readonly slotWaiters: (() => void)[] = [];
  private readonly running: ConsumerMessages[] = [];
  private readonly loops: Promise<void>[] = [];
  /** Bindings the consumer's filter cannot express: the transport acks what does not match. */
  private readonly filterHere: boolean;
  private readonly filterSubject: string | undefined;
  private readonly retrySubject: string;
  private keepAlive: NodeJS.Timeout | undefined;
  private stopped = false;
  private redeclaring: Promise<void> | undefined;

  constructor(
    readonly spec: QueueSpec,
    private readonly ctx: NatsQueueContext,
    private readonly onDelivery: (delivery: Delivery) => void,
  ) {
    // An exclusive queue is one instance's own: a suffix keeps a restarted instance off the
    // consumer its predecessor left behind until inactive_threshold removes it.
    this.consumer = natsToken(spec.exclusive ? `${spec.queue}-${randomUUID().slice(0, 8)}` : spec.queue);
    const single = spec.bindings.length === 1 ? bindingSubject(ctx.names.eventPrefix, spec.bindings[0]!) : undefined;
    this.filterSubject = single;
    // 2.9 has no multi-filter consumers (filter_subjects is 2.10+): several bindings take every
    // event and this side drops what matches none.
    this.filterHere = single === undefined;
    this.retrySubject = `${ctx.names.retryPrefix}${this.consumer}`;
  }

  async open(): Promise<void> {
    await this.declare();
    this.loops.push(this.run(this.ctx.names.eventsStream, 'main'), this.run(this.ctx.names.retryStream, 'retry'));
    const every = Math.max(250, Math.floor(this.ctx.ackWaitMs / 3));
    this.keepAlive = setInterval(() => this.touch(), every);
    this.keepAlive.unref();
  }

  private mainConfig(): Partial<ConsumerConfig> {
    return {
      ...this.nameOf(),
      ack_policy: AckPolicy.Explicit,
      // A queue gets what is published after it is declared, as on RabbitMQ.
      deliver_policy: DeliverPolicy.New,
      ...(this.filterSubject ? { filter_subject: this.filterSubject } : {}),
      max_ack_pending: this.spec.prefetch,
      ack_wait: nanos(this.ctx.ackWaitMs),
      max_deliver: this.ctx.deliveryLimit,
      // No `backoff`: tried (ack_wait doubling), a message given back by close() with an explicit
      // nak delay (see release()) then came back far later than that delay on 2.9.10 (the
      // delivery-limit test stalled), which looks like the backoff schedule overriding nak
      // delays; not investigated further. A live consumer keeps its deliveries with working(), so ack_wait only paces the
      // redelivery of a dead process's deliveries, and max_deliver bounds a crash loop.
    };
  }

  private retryConfig(): Partial<ConsumerConfig> {
    return {
      ...this.nameOf(),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      filter_subject: this.retrySubject,
      max_ack_pending: RETRY_MAX_PENDING,
      ack_wait: nanos(this.ctx.ackWaitMs),
    };
  }

  private nameOf(): Partial<ConsumerConfig> {
    return this.spec.exclusive ? { name: this.consumer, inactive_threshold: nanos(this.ctx.exclusiveInactiveMs) } : { durable_name: this.consumer };
  }

  /** Create both consumers, or bring existing durables to this spec. */
  private async declare(): Promise<void> {
    await this.ensure(this.ctx.names.eventsStream, this.mainConfig());
    await this.ensure(this.ctx.names.retryStream, this.retryConfig());
  }

  private async ensure(stream: string, config: Partial<ConsumerConfig>): Promise<void> {
    const jsm = this.ctx.jsm();
    const existing = await jsm.consumers.info(stream, this.consumer).catch((error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound) return undefined;
      throw error;
    });
    if (!existing) {
      await jsm.consumers.add(stream, config);
      return;
    }
    if ((existing.config.filter_subject ?? undefined) !== (config.filter_subject ?? undefined)) {
      // 2.9 cannot change a consumer's filter: re-create it where the old one's acks stand, so
      // the new bindings apply from here on and nothing it had not taken is skipped.
      const from = existing.ack_floor.stream_seq + 1;
      this.ctx.logger.info({ stream, consumer: this.consumer, from }, 'queue bindings changed: re-creating its consumer');
      await jsm.consumers.delete(stream, this.consumer);
      await jsm.consumers.add(stream, { ...config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from });
      return;
    }
    const { max_ack_pending = -1, ack_wait = 0, max_deliver } = config;
    if (existing.config.max_ack_pending !== max_ack_pending || existing.config.ack_wait !== ack_wait || (max_deliver !== undefined && existing.config.max_deliver !== max_deliver)) {
      // Another process (or an older version) declared it otherwise: the last to start wins, as a
      // RabbitMQ policy would; the settings come from the same configuration everywhere.
      await jsm.consumers.update(stream, this.consumer, { max_ack_pending, ack_wait, ...(max_deliver !== undefined ? { max_deliver } : {}) });
    }
  }

  private async run(stream: string, kind: 'main' | 'retry'): Promise<void> {
    try {
      const consumer = await this.ctx.js().consumers.get(stream, this.consumer);
      const messages = await consumer.consume({ max_messages: Math.min(this.spec.prefetch, 256), expires: PULL_EXPIRES_MS });
      this.running.push(messages);
      if (this.stopped) messages.stop();
      void this.watch(messages);
      for await (const message of messages) {
        if (this.stopped) {
          message.nak(PULL_EXPIRES_MS + 500);
          continue;
        }
        try {
          await (kind === 'main' ? this.takeEvent(message) : this.takeRetry(message));
        } catch (error) {
          // Left unacked: JetStream hands it out again after ack_wait.
          this.ctx.logger.error({ queue: this.spec.queue, err: errorMessage(error) }, 'could not hand out a delivery');
        }
      }
    } catch (error) {
      if (!this.stopped) this.ctx.logger.error({ queue: this.spec.queue, stream, err: errorMessage(error) }, 'consumer stopped');
    }
  }

  /**
   * The client re-pulls by itself after a reconnection and finds a durable again after a server
   * restart. An exclusive queue's ephemeral consumer may be gone (inactive_threshold passed, or
   * the server restarted): declare it again and tell the owner what it missed.
   */
  private async watch(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (this.stopped) return;
      if (status.type !== 'consumer_not_found' && status.type !== 'consumer_deleted') continue;
      this.redeclaring ??= this.declare()
        .then(() => {
          this.ctx.logger.warn({ queue: this.spec.queue }, 'queue consumer was gone: declared it again');
          if (this.spec.exclusive) this.spec.onResubscribed?.();
        })
        .catch((error: unknown) => this.ctx.logger.warn({ queue: this.spec.queue, err: errorMessage(error) }, 'could not declare the queue consumer again: retrying'))
        .finally(() => {
          this.redeclaring = undefined;
        });
    }
  }

  private async takeEvent(message: JsMsg): Promise<void> {
    const routingKey = message.subject.slice(this.ctx.names.eventPrefix.length);
    if (this.filterHere && !this.spec.bindings.some((b) => topicMatches(b, routingKey))) {
      message.ack();
      return;
    }
    const headers = fromNatsHeaders(message.headers);
    const delivery = new NatsDelivery(this, message, payload(message.data), message.headers?.get('Nats-Msg-Id') || undefined, routingKey, headers, message.info.deliveryCount > 1);
    if (message.info.deliveryCount >= this.ctx.deliveryLimit) {
      // The last delivery JetStream will make (max_deliver): a message that keeps killing its
      // consumer before any settle goes to the DLQ instead of vanishing.
      this.handedOut.set(message, delivery);
      await delivery.deadLetter({ code: 'DELIVERY_LIMIT', message: `delivered ${message.info.deliveryCount} times without being settled` });
      return;
    }
    await this.handOut(message, delivery);
  }

  private async takeRetry(message: JsMsg): Promise<void> {
    const due = Number(message.headers?.get(DUE_HEADER) || 0);
    const early = due - Date.now();
    if (early > 0) {
      // JetStream's per-message delay does the waiting: it hands the copy out again when due.
      message.nak(early);
      return;
    }
    const headers = fromNatsHeaders(message.headers, [MESSAGE_ID_HEADER, DUE_HEADER]);
    const original = headers[Headers.routingKey];
    const routingKey = typeof original === 'string' ? original : '';
    const messageId = message.headers?.get(MESSAGE_ID_HEADER) || undefined;
    // Its delivery count also counts the naks that waited for the due time, so it says nothing about a lost consumer.
    await this.handOut(message, new NatsDelivery(this, message, payload(message.data), messageId, routingKey, headers, false));
  }

  /** Wait for a prefetch slot (the two consumers share it), then give it to the handler. */
  private async handOut(message: JsMsg, delivery: NatsDelivery): Promise<void> {
    if (this.handedOut.size >= this.spec.prefetch) {
      this.holding.add(message);
      while (this.handedOut.size >= this.spec.prefetch && !this.stopped) await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      this.holding.delete(message);
    }
    if (this.stopped) {
      message.nak(PULL_EXPIRES_MS + 500);
      return;
    }
    this.handedOut.set(message, delivery);
    this.onDelivery(delivery);
  }

  settled(message: JsMsg): void {
    if (this.handedOut.delete(message)) this.slotWaiters.shift()?.();
  }

  /** Tell JetStream we still work on what we hold, so ack_wait only moves a dead process's deliveries. */
  private touch(): void {
    for (const message of this.handedOut.keys()) message.working();
    for (const message of this.holding) message.working();
  }

  async toRetry(body: Buffer, headers: Record<string, unknown>, due: number): Promise<void> {
    await this.ctx.js().publish(this.retrySubject, body, { headers: toNatsHeaders({ ...headers, [DUE_HEADER]: due }) });
  }

  async toDeadLetters(body: Buffer, headers: Record<string, unknown>): Promise<void> {
    await this.ctx.js().publish(`${this.ctx.names.dlqPrefix}${natsToken(this.spec.queue)}`, body, { headers: toNatsHeaders(headers) });
  }

  async cancel(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const resolve of this.slotWaiters.splice(0)) resolve();
    for (const messages of this.running) messages.stop();
    await Promise.allSettled(this.loops);
  }

  async close(): Promise<void> {
    await this.cancel();
    for (const delivery of [...this.handedOut.values()]) delivery.release(PULL_EXPIRES_MS + 500);
    clearInterval(this.keepAlive);
    if (this.spec.exclusive) {
      await this.deleteConsumer(this.ctx.names.eventsStream);
      await this.deleteConsumer(this.ctx.names.retryStream);
    }
  }

  /**
   * An exclusive queue's consumer goes with it. 2.9.10 sometimes refuses a delete while the
   * consumer writes its state ("unlinkat …: directory not empty"): try again; inactive_threshold
   * removes it in the end anyway.
   */
  private async deleteConsumer(stream: string): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.ctx.jsm().consumers.delete(stream, this.consumer);
        return;
      } catch (error) {
        if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.ConsumerNotFound) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
