import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DEFAULT_EVENT_LOG_RETENTION, parseLogRetention } from '../config.ts';
import { CoreErrorCode, errorMessage, TributaryError } from '../errors.ts';
import type { LogRetention } from './log-rabbitmq.ts';
import { RedisEventLog } from './log-redis.ts';
import { replayHeaders } from './memory.ts';
import { RedisConsumer } from './redis-consumer.ts';
import { GROUP, parseEntry, parseHeaders, RedisKeys, type RedisTransportOptions } from './redis-options.ts';
import { defineScripts } from './redis-scripts.ts';
import { Headers, type ConsumerHandle, type DeadLetter, type Delivery, type OutgoingMessage, type QueueSpec, type ReplayOptions, type Transport } from './transport.ts';

export type { RedisTransportOptions } from './redis-options.ts';

/** The settings' default, as the RabbitMQ transport takes it. */
function defaultRetention(): LogRetention {
  const parsed = parseLogRetention(DEFAULT_EVENT_LOG_RETENTION);
  return typeof parsed === 'string' ? {} : parsed;
}

/** How often due retries move back into their queues: the resolution of the retry delays. */
const PROMOTE_EVERY_MS = 25;

/**
 * Redis Streams transport over ioredis, shaped like the RabbitMQ one: a stream per consumer queue
 * (`<ns>:q:<queue>`, consumer group `g`), topic bindings in `<ns>:bindings`, routed atomically at
 * publish by one Lua script that also appends to the log (`redis-scripts.ts`); retry tiers as a
 * sorted set of due copies per queue, moved back by a timer; a DLQ stream per queue.
 *
 * The script returning is the broker's confirm: Redis ran it whole. Durability is the server's
 * (`appendonly yes` with `appendfsync always` loses nothing confirmed; the default `everysec`
 * up to a second). ioredis reconnects by itself and resends what was in flight, so a publish cut
 * by a lost connection may land twice: the inbox makes that harmless, as with RabbitMQ.
 *
 * Its parts: the options and keys (`redis-options.ts`), the scripts, the consumers and their
 * deliveries (`redis-consumer.ts`, `redis-delivery.ts`) and the log (`log-redis.ts`).
 */
export class RedisStreamsTransport implements Transport {
  readonly kind = 'redis' as const;
  readonly namespace: string;
  readonly log: RedisEventLog | undefined;
  private readonly keys: RedisKeys;
  private readonly logger: Logger;
  private readonly publishTimeoutMs: number;
  private readonly retention: LogRetention | undefined;
  private readonly consumerName: string;
  private client: Redis | undefined;
  private closing = false;
  private readonly consumers = new Set<RedisConsumer>();
  private promoteTimer: NodeJS.Timeout | undefined;
  private promoting = false;

  constructor(private readonly options: RedisTransportOptions) {
    this.namespace = options.namespace;
    this.keys = new RedisKeys(options.namespace);
    this.logger = options.logger.child({ component: 'redis' });
    this.publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.consumerName = options.consumerName ?? `${hostname()}:${process.pid}`;
    this.retention = options.log === false ? undefined : (options.log ?? defaultRetention());
    this.log = options.log === false ? undefined : new RedisEventLog({ key: this.keys.log, client: () => this.connection(), logger: this.logger });
  }

  async start(): Promise<void> {
    if (this.closing) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the Redis transport is closed');
    const client = new Redis(this.options.url, {
      lazyConnect: true,
      ...(this.options.connectionName ? { connectionName: this.options.connectionName } : {}),
      // Commands wait while disconnected; publish() bounds the wait with its own timeout.
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 8), 2_000),
    });
    defineScripts(client);
    let connectedBefore = false;
    let connected = false;
    client.on('error', (error: Error) => this.logger.debug({ err: errorMessage(error) }, 'redis connection error'));
    client.on('close', () => {
      // Once per loss, not once per failed reconnection attempt.
      if (connected && !this.closing) this.logger.warn('redis connection lost: reconnecting');
      connected = false;
    });
    client.on('ready', () => {
      connected = true;
      if (connectedBefore && !this.closing) {
        this.logger.info('redis connected again');
        // The server may have restarted without our groups: declare every queue again.
        for (const consumer of this.consumers) {
          if (consumer.active) consumer.declare().catch((error) => this.logger.error({ queue: consumer.spec.queue, err: errorMessage(error) }, 'resubscribe failed'));
        }
      }
      connectedBefore = true;
    });
    this.client = client;
    // ioredis retries a failed first connection by itself; like the RabbitMQ transport's few
    // initial retries, start() waits for it a while (publishTimeoutMs), then gives up and stops it.
    let lastError: unknown;
    const onError = (error: unknown) => (lastError = error);
    client.on('error', onError);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `Redis not reachable within ${this.publishTimeoutMs} ms: ${errorMessage(lastError)}`)), this.publishTimeoutMs);
        client.once('ready', () => {
          clearTimeout(timer);
          resolve();
        });
        client.connect().catch((error: unknown) => (lastError = error));
      });
    } catch (error) {
      this.client = undefined;
      client.disconnect();
      throw error;
    } finally {
      client.off('error', onError);
    }
    await this.checkServer(client);
  }

  /** Redis 7 or later: the log needs XINFO STREAM's entries-added, the consumers XAUTOCLAIM (6.2). */
  private async checkServer(client: Redis): Promise<void> {
    const info = await client.info('server');
    const version = /redis_version:(\d+)\./.exec(info)?.[1];
    if (version !== undefined && Number(version) < 7) {
      await this.close();
      throw new TributaryError(CoreErrorCode.CONFIG_INVALID, `the Redis transport needs Redis 7 or later; ${this.options.url.replace(/\/\/[^@/]*@/, '//***@')} runs ${/redis_version:([^\r\n]+)/.exec(info)?.[1]}`);
    }
  }

  isReady(): boolean {
    return !this.closing && this.client?.status === 'ready';
  }

  /** The command connection, once it is ready; PUBLISH_TIMEOUT after publishTimeoutMs, TRANSPORT_CLOSED once closed. */
  private async connection(): Promise<Redis> {
    const client = this.client;
    if (this.closing) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the Redis transport is closed');
    if (!client) throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the Redis transport is not started');
    if (client.status === 'ready') return client;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off('ready', ready);
        reject(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `Redis not reachable within ${this.publishTimeoutMs} ms`));
      }, this.publishTimeoutMs);
      const ready = () => {
        clearTimeout(timer);
        resolve();
      };
      client.once('ready', ready);
    });
    return this.connection();
  }

  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    const client = await this.connection();
    if (messages.length === 0) return;
    const args: (string | Buffer)[] = [this.keys.prefix, this.retention ? '1' : '0', String(this.retention?.maxAgeMs ?? ''), String(this.retention?.maxBytes ?? '')];
    for (const m of messages) args.push(m.messageId, m.routingKey, JSON.stringify(m.headers ?? {}), m.body);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `Redis did not confirm ${messages.length} message(s) within ${this.publishTimeoutMs} ms`)), this.publishTimeoutMs);
    });
    try {
      await Promise.race([client.tributaryPublish(this.keys.log, this.keys.bindings, ...args), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async consume(spec: QueueSpec, onDelivery: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    const client = await this.connection();
    // Two consumers of one queue in this transport need names of their own: each reads its own
    // pending entries. The first free one, so a consumer opened again after a close gets its name back.
    const taken = new Set([...this.consumers].filter((c) => c.spec.queue === spec.queue).map((c) => c.name));
    let name = this.consumerName;
    for (let n = 2; taken.has(name); n++) name = `${this.consumerName}#${n}`;
    const claimMinIdleMs = this.options.claimMinIdleMs ?? 30_000;
    const consumer = new RedisConsumer(spec, onDelivery, {
      client,
      keys: this.keys,
      consumerName: name,
      logger: this.logger,
      claimMinIdleMs,
      claimIntervalMs: this.options.claimIntervalMs ?? Math.max(10, Math.floor(claimMinIdleMs / 3)),
      deliveryLimit: this.options.deliveryLimit ?? 20,
      exclusiveTtlMs: this.options.exclusiveTtlMs ?? 30_000,
    });
    this.consumers.add(consumer);
    try {
      await consumer.start();
    } catch (error) {
      this.consumers.delete(consumer);
      await consumer.cancel();
      throw error;
    }
    this.promoteTimer ??= setInterval(() => void this.promoteDue(), PROMOTE_EVERY_MS).unref();
    return {
      cancel: () => consumer.cancel(),
      close: async () => {
        await consumer.cancel();
        this.consumers.delete(consumer);
        await consumer.removeExclusive().catch(() => {});
      },
    };
  }

  /** Move due retries back into the queues this transport consumes, one script per queue, pipelined. */
  private async promoteDue(): Promise<void> {
    const client = this.client;
    if (this.promoting || this.closing || client?.status !== 'ready') return;
    const queues = new Set([...this.consumers].filter((c) => c.spec.retryDelaysMs.length > 0).map((c) => c.spec.queue));
    if (queues.size === 0) return;
    this.promoting = true;
    try {
      const pipeline = client.pipeline();
      for (const queue of queues) pipeline.tributaryPromote(this.keys.delayed(queue), this.keys.queue(queue), 100);
      for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
    } catch (error) {
      this.logger.warn({ err: errorMessage(error) }, 'moving due retries failed');
    } finally {
      this.promoting = false;
    }
  }

  async listDeadLetters(queue: string, limit: number): Promise<DeadLetter[]> {
    const client = await this.connection();
    const raw = (await client.xrangeBuffer(this.keys.dlq(queue), '-', '+', 'COUNT', limit)) as [Buffer, Buffer[]][];
    return raw.map(parseEntry).flatMap(({ fields }) => {
      if (!fields) return [];
      const headers = parseHeaders(fields.headers);
      const original = headers[Headers.routingKey];
      return [{ messageId: fields.id === '' ? undefined : fields.id, routingKey: typeof original === 'string' ? original : fields.key, headers, body: fields.body }];
    });
  }

  async replayDeadLetters(queue: string, options: ReplayOptions = {}): Promise<number> {
    const client = await this.connection();
    if (!(await client.hexists(this.keys.bindings, queue)) && !(await client.exists(this.keys.queue(queue)))) {
      throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`);
    }
    const wanted = options.messageIds ? new Set(options.messageIds) : undefined;
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    let moved = 0;
    let from = '-';
    while (moved < limit) {
      const page = ((await client.xrangeBuffer(this.keys.dlq(queue), from, '+', 'COUNT', 100)) as [Buffer, Buffer[]][]).map(parseEntry);
      if (page.length === 0) break;
      from = `(${page.at(-1)!.entryId}`;
      for (const { entryId, fields } of page) {
        if (moved >= limit) break;
        if (!fields || (wanted && !wanted.has(fields.id))) continue;
        const headers = JSON.stringify(replayHeaders(parseHeaders(fields.headers)));
        if ((await client.tributaryReplay(this.keys.dlq(queue), this.keys.queue(queue), entryId, headers)) === 1) {
          moved++;
          options.onMoved?.();
        }
      }
    }
    return moved;
  }

  /** Entries in the queue no consumer holds yet: the stream's length less what is pending (acked entries are deleted). */
  async queueDepth(queue: string): Promise<number> {
    const client = await this.connection();
    const key = this.keys.queue(queue);
    const length = await client.xlen(key);
    if (length === 0) return 0;
    const summary = (await client.xpending(key, GROUP).catch(() => [0])) as [number, ...unknown[]];
    return Math.max(0, length - Number(summary[0] ?? 0));
  }

  async close(): Promise<void> {
    if (this.closing) return;
    clearInterval(this.promoteTimer);
    const consumers = [...this.consumers];
    this.consumers.clear();
    await Promise.all(consumers.map((c) => c.cancel()));
    // Exclusive queues go with their owner, while the connection is still ours to use.
    if (this.client?.status === 'ready') await Promise.all(consumers.map((c) => c.removeExclusive().catch(() => {})));
    this.closing = true;
    await this.client?.quit().catch(() => {});
    this.client?.disconnect();
  }
}

/** Delete every key of a namespace (tests, decommissioning). */
export async function deleteRedisNamespace(url: string, namespace: string): Promise<void> {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  try {
    const pattern = `${namespace.replace(/[*?[\]\\]/g, '\\$&')}:*`;
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    await client.quit().catch(() => {});
  }
}
