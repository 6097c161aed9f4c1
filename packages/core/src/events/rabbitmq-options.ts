import type { Logger } from 'pino';
import type { RabbitMqLogOptions } from './log-rabbitmq.ts';

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
  /**
   * The event log, a stream `<ns>.events.log` each publish also writes to (`log-rabbitmq.ts`),
   * with its retention; `false` turns it off (`Transport.log` is then undefined). Default: on,
   * with `DEFAULT_EVENT_LOG_RETENTION` (7 days, 10 GB); `createTransport` passes `EVENT_LOG_RETENTION`.
   */
  log?: RabbitMqLogOptions | false;
}
