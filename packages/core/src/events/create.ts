import type { Logger } from 'pino';
import { InMemoryTransport } from './memory.ts';
import { RabbitMqTransport } from './rabbitmq.ts';
import type { Transport } from './transport.ts';

/** RabbitMQ when `AMQP_URL` is set, else the in-memory bus (single process only). */
export function createTransport(config: { AMQP_URL?: string | undefined; TRIBUTARY_NAMESPACE: string }, logger: Logger, connectionName?: string): Transport {
  if (!config.AMQP_URL) {
    logger.info('AMQP_URL is not set: using the in-memory event bus (single process only)');
    return new InMemoryTransport(config.TRIBUTARY_NAMESPACE);
  }
  return new RabbitMqTransport({
    url: config.AMQP_URL,
    namespace: config.TRIBUTARY_NAMESPACE,
    logger,
    ...(connectionName ? { connectionName } : {}),
  });
}
