import type { Logger } from 'pino';
import { eventBusKind, eventBusUrl, type EventLogRetention } from '../config.ts';
import { MemoryEventLog } from './log-memory.ts';
import { InMemoryTransport } from './memory.ts';
import { deleteNatsNamespace, NatsJetStreamTransport } from './nats.ts';
import { deleteNamespace as deleteRabbitMqNamespace, RabbitMqTransport } from './rabbitmq.ts';
import { deleteRedisNamespace, RedisStreamsTransport } from './redis.ts';
import type { Transport } from './transport.ts';

/** The most a lone process's in-memory log keeps (event bodies), whatever `EVENT_LOG_RETENTION` says. */
export const MEMORY_LOG_MAX_BYTES = 256e6;

/** What {@link createTransport} reads of the configuration (`baseConfigSchema`'s keys). */
export interface TransportConfig {
  /** The broker, by scheme (`amqp://`, `redis://`, `nats://`); `AMQP_URL` when unset. */
  EVENT_BUS_URL?: string | undefined;
  AMQP_URL?: string | undefined;
  TRIBUTARY_NAMESPACE: string;
  /** Default on. */
  EVENT_LOG?: 'on' | 'off' | undefined;
  /** Default: the broker keeps everything (`baseConfigSchema` sets 7 days and 10 GB). */
  EVENT_LOG_RETENTION?: EventLogRetention | undefined;
}

/**
 * The broker `EVENT_BUS_URL` (or `AMQP_URL`) names: RabbitMQ, Redis Streams or NATS JetStream,
 * each with its log (a RabbitMQ stream, a Redis stream, the JetStream stream). Neither set: the
 * in-memory bus (single process only; its log an array, kept within the same retention and at
 * most {@link MEMORY_LOG_MAX_BYTES}). Embedded mode (`apps/dev`) builds its bus itself, with the
 * log in a table.
 */
export function createTransport(config: TransportConfig, logger: Logger, connectionName?: string): Transport {
  const logOn = config.EVENT_LOG !== 'off';
  const retention = config.EVENT_LOG_RETENTION ?? {};
  const url = eventBusUrl(config);
  if (!url) {
    logger.info('EVENT_BUS_URL is not set: using the in-memory event bus (single process only)');
    // In this process's memory: capped well below a broker's disk budget whatever the setting.
    const maxBytes = Math.min(retention.maxBytes ?? MEMORY_LOG_MAX_BYTES, MEMORY_LOG_MAX_BYTES);
    return new InMemoryTransport(config.TRIBUTARY_NAMESPACE, logOn ? new MemoryEventLog({ ...retention, maxBytes }) : undefined);
  }
  const options = { url, namespace: config.TRIBUTARY_NAMESPACE, logger, log: logOn ? retention : (false as const), ...(connectionName ? { connectionName } : {}) };
  switch (eventBusKind(url)) {
    case 'rabbitmq':
      return new RabbitMqTransport(options);
    case 'redis':
      return new RedisStreamsTransport(options);
    case 'nats':
      return new NatsJetStreamTransport(options);
  }
}

/**
 * Delete everything a namespace declared on the broker `url` names: queues, exchange and log on
 * RabbitMQ, keys on Redis, streams and consumers on NATS (tests, benchmarks, decommissioning).
 * `rabbitMqQueues`: RabbitMQ cannot list queues over AMQP, so its caller names them.
 */
export async function deleteBusNamespace(url: string, namespace: string, rabbitMqQueues: readonly string[] = []): Promise<void> {
  switch (eventBusKind(url)) {
    case 'rabbitmq':
      return deleteRabbitMqNamespace(url, namespace, rabbitMqQueues);
    case 'redis':
      return deleteRedisNamespace(url, namespace);
    case 'nats':
      return deleteNatsNamespace(url, namespace);
  }
}
