import type { ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import type { Logger } from 'pino';
import { CoreErrorCode, TributaryError, errorMessage } from '../errors.ts';
import { exchangeName, Headers, type OutgoingMessage } from './transport.ts';
import { LOG_PACK_HEADER, pack } from './log-rabbitmq-pack.ts';

/**
 * Publishing with publisher confirms on one confirm channel per connection, opened on first use
 * and again after the connection or the channel was lost.
 */
export class ConfirmPublisher {
  private publishChannel: Promise<ConfirmChannel> | undefined;

  constructor(
    /** The open connection, once there is one. */
    private readonly currentModel: () => Promise<ChannelModel>,
    private readonly namespace: string,
    private readonly log: Logger,
    private readonly publishTimeoutMs: number,
  ) {}

  /** Forget the channel (its connection went or was replaced): the next publish opens one. */
  reset(): void {
    this.publishChannel = undefined;
  }

  private confirmChannel(): Promise<ConfirmChannel> {
    if (!this.publishChannel) {
      const created = this.currentModel().then(async (model) => {
        const channel = await model.createConfirmChannel();
        channel.on('error', (error: Error) => this.log.warn({ err: errorMessage(error) }, 'publish channel error'));
        channel.on('close', () => {
          if (this.publishChannel === created) this.publishChannel = undefined;
        });
        channel.on('return', (message: ConsumeMessage) => {
          // Mandatory publish that no queue is bound for: the broker accepted it and says no
          // consumer is declared for this event type. That is a deployment fact, not a fault to
          // retry; make it visible. (The event log's stream is written directly, not through
          // the exchange: it does not count as a bound queue.)
          this.log.warn({ routingKey: message.fields.routingKey, messageId: message.properties.messageId }, 'event is unroutable: no queue is bound for its type');
        });
        return channel;
      });
      created.catch(() => {
        if (this.publishChannel === created) this.publishChannel = undefined;
      });
      this.publishChannel = created;
    }
    return this.publishChannel;
  }

  /**
   * Publish to the events exchange; with `logStream`, first write the same events, packed, to the
   * log's stream on the same channel. Resolves once the broker has confirmed both: an event the
   * caller counts as sent is in the queues and in the log. (A failure after the log's confirm
   * makes the caller publish again: the log can then hold an event twice, which its readers
   * drop by event id, as they drop any redelivery.)
   */
  async publish(messages: readonly OutgoingMessage[], logStream?: string): Promise<void> {
    if (messages.length === 0) return;
    const channel = await this.confirmChannel();
    const exchange = exchangeName(this.namespace);
    const timed = messages.map(withTime);
    const logged = logStream
      ? confirmAll(channel, pack(timed), this.publishTimeoutMs, (record, callback) =>
          channel.sendToQueue(logStream, record, { persistent: true, headers: { [LOG_PACK_HEADER]: 1 } }, callback),
        )
      : Promise.resolve();
    const routed = confirmAll(channel, timed, this.publishTimeoutMs, (message, callback) =>
      channel.publish(exchange, message.routingKey, message.body, publishOptions(message, true), callback),
    );
    // Both awaited, so neither rejection goes unhandled.
    const [log, route] = await Promise.allSettled([logged, routed]);
    if (log.status === 'rejected') throw log.reason;
    if (route.status === 'rejected') throw route.reason;
  }

  /** A message straight to `queue` with confirms (retry and dead-letter copies of a delivery). */
  async sendToQueue(queue: string, message: { body: Buffer; messageId: string | undefined; headers: Record<string, unknown> }): Promise<void> {
    const channel = await this.confirmChannel();
    await confirmAll(channel, [message], this.publishTimeoutMs, (m, callback) => channel.sendToQueue(queue, m.body, publishOptions(m, false), callback));
  }
}

/**
 * Every event carries when it was written (the relay sets it from the outbox row): the log's
 * `{ time }` reads and its age rely on it, and a stream keeps no per-message time of its own.
 */
function withTime(message: OutgoingMessage): OutgoingMessage {
  if (message.headers?.[Headers.time] !== undefined) return message;
  return { ...message, headers: { ...message.headers, [Headers.time]: Date.now() } };
}

export function publishOptions(message: { messageId?: string | undefined; routingKey?: string; headers?: Record<string, unknown> }, mandatory: boolean): Options.Publish {
  const options: Options.Publish = { persistent: true, mandatory, contentType: 'application/cloudevents+json' };
  if (message.messageId) options.messageId = message.messageId;
  if (message.routingKey) options.type = message.routingKey;
  if (message.headers) options.headers = message.headers;
  return options;
}

/** Publish each message with a confirm callback, honouring backpressure; resolve when all are acked. */
export function confirmAll<M>(
  channel: ConfirmChannel,
  messages: readonly M[],
  publishTimeoutMs: number,
  send: (message: M, callback: (error: unknown) => void) => boolean,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let pending = messages.length;
    let failed = false;
    const fail = (error: TributaryError) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new TributaryError(CoreErrorCode.PUBLISH_TIMEOUT, `broker did not confirm ${pending} of ${messages.length} messages within ${publishTimeoutMs} ms`)),
      publishTimeoutMs,
    );
    const callback = (error: unknown) => {
      if (error) {
        fail(new TributaryError(CoreErrorCode.PUBLISH_NACKED, `broker refused a message: ${errorMessage(error)}`, { cause: error }));
        return;
      }
      if (--pending === 0 && !failed) {
        clearTimeout(timer);
        resolve();
      }
    };
    const sendFrom = (index: number) => {
      for (let i = index; i < messages.length; i++) {
        if (failed) return;
        let writable: boolean;
        try {
          writable = send(messages[i]!, callback);
        } catch (error) {
          fail(new TributaryError(CoreErrorCode.PUBLISH_NACKED, `publish failed: ${errorMessage(error)}`, { cause: error }));
          return;
        }
        if (!writable && i + 1 < messages.length) {
          channel.once('drain', () => sendFrom(i + 1));
          return;
        }
      }
    };
    sendFrom(0);
  });
}
