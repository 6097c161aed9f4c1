import { connect, type ChannelModel, type RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import type { RabbitMqTransportOptions } from './rabbitmq-options.ts';

/** What the transport does when the connection comes up (again) or is lost. */
export interface ConnectionHooks {
  /** Runs on every (re)connection before it is handed out. */
  setup: (model: ChannelModel) => Promise<void>;
  /** The connection was lost; amqplib reconnects with backoff. */
  disconnected: () => void;
}

/**
 * A connection that recovers by itself: after a loss amqplib reconnects with backoff and jitter
 * and runs `hooks.setup` on the new one. Resolves before the first connection is made (wait for
 * it with `waitForConnect()`), so the caller holds it, to close, even if that never comes.
 */
export async function connectWithRecovery(options: RabbitMqTransportOptions, log: Logger, hooks: ConnectionHooks): Promise<RecoveringChannelModel> {
  const r = options.reconnect ?? {};
  const connection = await connect(options.url, {
    // Nagle's algorithm holds small frames (acks, confirms) back for tens of milliseconds
    // waiting for more; every hop of the pipeline would pay that.
    noDelay: true,
    clientProperties: { connection_name: options.connectionName ?? `${options.namespace}.${process.pid}` },
    recovery: {
      initialDelay: r.initialDelayMs ?? 100,
      maxDelay: r.maxDelayMs ?? 10_000,
      jitter: r.jitter ?? 0.3,
      initialMaxRetries: r.initialMaxRetries ?? 5,
      waitForConnect: false,
      setup: (model: ChannelModel) => hooks.setup(model),
    },
  });
  connection.on('disconnect', (error: Error) => {
    hooks.disconnected();
    log.warn({ err: errorMessage(error) }, 'broker connection lost; reconnecting');
  });
  connection.on('reconnect-scheduled', (info: { attempt: number; delay: number }) => log.info({ attempt: info.attempt, delayMs: info.delay }, 'broker reconnect scheduled'));
  connection.on('reconnect-failed', (error: Error) => log.error({ err: errorMessage(error) }, 'broker reconnect gave up'));
  connection.on('error', (error: Error) => log.warn({ err: errorMessage(error) }, 'broker connection error'));
  return connection;
}
