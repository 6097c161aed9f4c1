import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { GROUP, parseEntry, type RedisKeys, type StreamFields } from './redis-options.ts';
import { RedisDelivery } from './redis-delivery.ts';
import type { Delivery, QueueSpec } from './transport.ts';

/** What a consumer needs from its transport. */
export interface RedisConsumerContext {
  /** The transport's command connection (acks, claims, retries). */
  client: Redis;
  keys: RedisKeys;
  /** This consumer's name in the queue's group. */
  consumerName: string;
  logger: Logger;
  claimMinIdleMs: number;
  claimIntervalMs: number;
  deliveryLimit: number;
  exclusiveTtlMs: number;
}

/** How long one blocking read waits before it looks again (cancel does not wait for it: it disconnects). */
const BLOCK_MS = 5_000;

/**
 * One consumer of a queue stream on a connection of its own (XREADGROUP blocks it). It reads its
 * own pending entries first (those it held when it stopped: `redelivered`), then new ones, never
 * holding more than `prefetch` unsettled; takes over entries a dead consumer held (XAUTOCLAIM);
 * and dead-letters an entry delivered more than `deliveryLimit` times.
 */
export class RedisConsumer {
  private readonly inFlight = new Map<string, RedisDelivery>();
  private cancelled = false;
  private subscribed = false;
  private wake: (() => void) | undefined;
  /** Entries were left pending in our name for want of room: the loop reads our pending list again. */
  private reread = false;
  /** A tick is under way (a slow server must not stack them up). */
  private ticking = false;
  /** Acks waiting for this turn's flush. */
  private readonly acks: { entryId: string; resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Where the next XAUTOCLAIM scan goes on: each scans a bounded part of the pending list. */
  private claimCursor = '0-0';
  private timer: NodeJS.Timeout | undefined;
  private readonly connection: Redis;
  private loop: Promise<void> | undefined;

  constructor(
    readonly spec: QueueSpec,
    private readonly onDelivery: (delivery: Delivery) => void,
    private readonly context: RedisConsumerContext,
  ) {
    this.connection = context.client.duplicate({ lazyConnect: true, maxRetriesPerRequest: null });
    this.connection.on('error', () => {}); // reported by the loop's failed reads; ioredis reconnects
  }

  get name(): string {
    return this.context.consumerName;
  }

  /** Not cancelled: still reading, and declared again after a reconnection. */
  get active(): boolean {
    return !this.cancelled;
  }

  get key(): string {
    return this.context.keys.queue(this.spec.queue);
  }

  /** Declare the queue (binding, group), then deliver until cancelled. */
  async start(): Promise<void> {
    await this.declare();
    await this.connection.connect();
    this.subscribed = true;
    this.loop = this.run();
    // An exclusive queue's binding must be refreshed well within its TTL, whatever the claim interval.
    const every = this.spec.exclusive ? Math.min(this.context.claimIntervalMs, Math.floor(this.context.exclusiveTtlMs / 3)) : this.context.claimIntervalMs;
    this.timer = setInterval(() => void this.tick(), Math.max(10, every));
    this.timer.unref();
  }

  /**
   * Register the binding and create the group (with its stream) if missing. A group created again
   * after the consumer ran means the server lost the queue (a restart without persistence, an
   * exclusive queue removed as expired): whatever was published meanwhile never reached it.
   */
  async declare(): Promise<void> {
    const { client, keys } = this.context;
    const binding: { patterns: readonly string[]; expiresAt?: number } = { patterns: this.spec.bindings };
    if (this.spec.exclusive) binding.expiresAt = Date.now() + this.context.exclusiveTtlMs;
    await client.hset(keys.bindings, this.spec.queue, JSON.stringify(binding));
    let created = true;
    try {
      await client.xgroup('CREATE', this.key, GROUP, '0', 'MKSTREAM');
    } catch (error) {
      if (!errorMessage(error).includes('BUSYGROUP')) throw error;
      created = false;
    }
    if (created && this.subscribed && !this.cancelled) {
      this.context.logger.warn({ queue: this.spec.queue }, 'queue lost on the server: declared again');
      this.spec.onResubscribed?.();
    }
  }

  private async run(): Promise<void> {
    let history: string | undefined = '0';
    let failures = 0;
    while (!this.cancelled) {
      if (this.reread) {
        this.reread = false;
        history = '0';
      }
      const room = this.spec.prefetch - this.inFlight.size;
      if (room <= 0) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      try {
        // callBuffer: ioredis types no Buffer variant of XREADGROUP; bodies must stay binary.
        const args = ['GROUP', GROUP, this.context.consumerName, 'COUNT', room];
        const reply = (await (history
          ? this.connection.callBuffer('XREADGROUP', ...args, 'STREAMS', this.key, history)
          : this.connection.callBuffer('XREADGROUP', ...args, 'BLOCK', BLOCK_MS, 'STREAMS', this.key, '>'))) as [Buffer, [Buffer, Buffer[] | null][]][] | null;
        failures = 0;
        const raw = reply?.[0]?.[1] ?? [];
        const entries = raw.map(parseEntry);
        if (history !== undefined) {
          // Our own pending entries: each was delivered before, some maybe too often.
          if (entries.length === 0) history = undefined;
          else {
            history = entries.at(-1)!.entryId;
            await this.handOut(entries, await this.deliveryCounts(entries.map((e) => e.entryId)));
          }
        } else await this.handOut(entries, undefined);
      } catch (error) {
        if (this.cancelled) break;
        failures++;
        if (failures === 1 || failures % 20 === 0) this.context.logger.warn({ queue: this.spec.queue, err: errorMessage(error) }, 'consumer read failed: reading again');
        await new Promise((r) => setTimeout(r, Math.min(100 * failures, 2_000)));
        // The server may have lost the group (NOGROUP after a restart without persistence).
        await this.declare().catch(() => {});
        history = '0';
      }
    }
  }

  /** Each entry's delivery count, from the group's pending list. */
  private async deliveryCounts(ids: string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    if (ids.length === 0) return counts;
    // Ids in order; our entries in flight may lie between them in the pending list, so the count allows for them.
    const rows = (await this.context.client.xpending(this.key, GROUP, ids[0]!, ids.at(-1)!, ids.length + this.inFlight.size, this.context.consumerName)) as [string, string, number, number][];
    for (const [id, , , count] of rows) counts.set(id, Number(count));
    return counts;
  }

  /**
   * Hand entries to the handler, at most up to the prefetch: a blocking read and a claim can both
   * return while the other filled the room. What does not fit stays pending in our name and is
   * read again from our pending list once there is room.
   */
  private async handOut(entries: { entryId: string; fields: StreamFields | undefined }[], counts: Map<string, number> | undefined): Promise<void> {
    for (const { entryId, fields } of entries) {
      if (this.inFlight.has(entryId)) continue; // already handed out (a re-read after a failed read)
      if (this.inFlight.size >= this.spec.prefetch || this.cancelled) {
        this.reread = true;
        continue;
      }
      if (!fields) {
        // Deleted while pending (settled by a consumer that lost it meanwhile): drop it.
        await this.context.client.xack(this.key, GROUP, entryId);
        continue;
      }
      const deliveries = counts?.get(entryId) ?? 1;
      const delivery = new RedisDelivery(this, entryId, fields, deliveries > 1);
      if (deliveries > this.context.deliveryLimit) {
        this.context.logger.warn({ queue: this.spec.queue, messageId: delivery.messageId, deliveries }, 'delivery limit reached: dead-lettered');
        await delivery.deadLetter({ code: 'DELIVERY_LIMIT', message: `delivered ${deliveries} times without being settled (limit ${this.context.deliveryLimit})` });
        continue;
      }
      this.inFlight.set(entryId, delivery);
      this.onDelivery(delivery);
    }
  }

  /**
   * Periodically: tell the group we still hold our unsettled entries (so no one takes over a slow
   * handler's), refresh an exclusive queue's binding, and take over entries idle too long.
   */
  private async tick(): Promise<void> {
    if (this.cancelled || this.ticking) return;
    this.ticking = true;
    const { client, consumerName, claimMinIdleMs } = this.context;
    try {
      if (this.inFlight.size > 0) await client.xclaim(this.key, GROUP, consumerName, 0, ...this.inFlight.keys(), 'JUSTID');
      if (this.spec.exclusive) await this.declare();
      const room = this.spec.prefetch - this.inFlight.size;
      if (room <= 0) return;
      const reply = (await client.callBuffer('XAUTOCLAIM', this.key, GROUP, consumerName, claimMinIdleMs, this.claimCursor, 'COUNT', room)) as [Buffer, [Buffer, Buffer[] | null][], Buffer[]?];
      this.claimCursor = reply[0].toString();
      const entries = (reply[1] ?? []).map(parseEntry).filter((e) => !this.inFlight.has(e.entryId));
      if (entries.length === 0 || this.cancelled) return;
      this.context.logger.info({ queue: this.spec.queue, count: entries.length }, 'took over entries another consumer held');
      await this.handOut(entries, await this.deliveryCounts(entries.map((e) => e.entryId)));
    } catch (error) {
      if (!this.cancelled) this.context.logger.warn({ queue: this.spec.queue, err: errorMessage(error) }, 'claiming idle entries failed');
    } finally {
      this.ticking = false;
    }
  }

  /** A delivery is settled: room for the next. */
  settled(entryId: string): void {
    this.inFlight.delete(entryId);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Stop reading. Unsettled deliveries stay pending under this consumer's name: the next consumer of that name reads them first, others take them over once idle. */
  async cancel(): Promise<void> {
    if (this.cancelled) return;
    this.cancelled = true;
    clearInterval(this.timer);
    this.wake?.();
    this.connection.disconnect();
    await this.loop?.catch(() => {});
  }

  /** An exclusive queue goes with its consumer. */
  async removeExclusive(): Promise<void> {
    if (!this.spec.exclusive) return;
    const { client, keys } = this.context;
    await client.multi().hdel(keys.bindings, this.spec.queue).del(this.key, keys.delayed(this.spec.queue), keys.dlq(this.spec.queue)).exec();
  }

  /** Settle one entry: `extra` (a retry or dead-letter copy) in the same MULTI as the ack, then XDEL so queue streams do not grow. */
  async settle(entryId: string, extra?: (multi: ReturnType<Redis['multi']>) => void): Promise<void> {
    if (!extra) return this.ack(entryId);
    const multi = this.context.client.multi();
    extra(multi);
    multi.xack(this.key, GROUP, entryId).xdel(this.key, entryId);
    await execOrThrow(multi);
    this.settled(entryId);
  }

  /**
   * Plain acks settled in the same turn of the event loop go in one XACK + XDEL of all their ids
   * (as the RabbitMQ transport coalesces its acks): one round trip instead of one per message.
   */
  private ack(entryId: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.acks.push({ entryId, resolve, reject });
      if (this.acks.length === 1) setImmediate(() => void this.flushAcks());
    });
  }

  private async flushAcks(): Promise<void> {
    const batch = this.acks.splice(0);
    const ids = batch.map((a) => a.entryId);
    try {
      await execOrThrow(this.context.client.multi().xack(this.key, GROUP, ...ids).xdel(this.key, ...ids));
      for (const a of batch) {
        this.settled(a.entryId);
        a.resolve();
      }
    } catch (error) {
      for (const a of batch) a.reject(error);
    }
  }

  get keys(): RedisKeys {
    return this.context.keys;
  }
}

async function execOrThrow(multi: ReturnType<Redis['multi']>): Promise<void> {
  const results = await multi.exec();
  const failed = results?.find(([error]) => error);
  if (failed) throw failed[0];
}
