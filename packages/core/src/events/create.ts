import type { Logger } from 'pino';
import type { EventLogRetention } from '../config.ts';
import { MemoryEventLog } from './log-memory.ts';
import { InMemoryTransport } from './memory.ts';
import { RabbitMqTransport } from './rabbitmq.ts';
import type { Transport } from './transport.ts';

/** The most a lone process's in-memory log keeps (event bodies), whatever `EVENT_LOG_RETENTION` says. */
export const MEMORY_LOG_MAX_BYTES = 256e6;

/** What {@link createTransport} reads of the configuration (`baseConfigSchema`'s keys). */
export interface TransportConfig {
  AMQP_URL?: string | undefined;
  TRIBUTARY_NAMESPACE: string;
  /** Default on. */
  EVENT_LOG?: 'on' | 'off' | undefined;
  /** Default: the broker keeps everything (`baseConfigSchema` sets 7 days and 10 GB). */
  EVENT_LOG_RETENTION?: EventLogRetention | undefined;
}

/**
 * RabbitMQ when `AMQP_URL` is set (the log is then a stream beside the exchange), else the
 * in-memory bus (single process only; its log an array, kept within the same retention and at
 * most {@link MEMORY_LOG_MAX_BYTES}).
 * Embedded mode (`apps/dev`) builds its bus itself, with the log in a table.
 */
export function createTransport(config: TransportConfig, logger: Logger, connectionName?: string): Transport {
  const logOn = config.EVENT_LOG !== 'off';
  const retention = config.EVENT_LOG_RETENTION ?? {};
  if (!config.AMQP_URL) {
    logger.info('AMQP_URL is not set: using the in-memory event bus (single process only)');
    // In this process's memory: capped well below a broker's disk budget whatever the setting.
    const maxBytes = Math.min(retention.maxBytes ?? MEMORY_LOG_MAX_BYTES, MEMORY_LOG_MAX_BYTES);
    return new InMemoryTransport(config.TRIBUTARY_NAMESPACE, logOn ? new MemoryEventLog({ ...retention, maxBytes }) : undefined);
  }
  return new RabbitMqTransport({
    url: config.AMQP_URL,
    namespace: config.TRIBUTARY_NAMESPACE,
    logger,
    log: logOn ? retention : false,
    ...(connectionName ? { connectionName } : {}),
  });
}
