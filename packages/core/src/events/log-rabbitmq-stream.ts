import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { cursorExpired, type LogStart } from './log.ts';
import { AckCoalescer } from './rabbitmq-delivery.ts';
import { Headers } from './transport.ts';

/** Header of the marker messages a read writes to find the log's end (never handed to readers). */
export const LOG_MARKER_HEADER = 'x-tributary-log-marker';

/** Where a stream consumer attaches (`x-stream-offset`): RabbitMQ 3.9+ over AMQP 0-9-1. */
export type StreamOffset = 'first' | 'last' | 'next' | number | { '!': 'timestamp'; value: number };

/** One delivery from the stream with its offset, and its marker id when it is a marker. */
export interface StreamMessage {
  readonly offset: number;
  readonly marker: string | undefined;
  readonly message: ConsumeMessage;
}

/**
 * A consumer of the stream on a channel of its own. Deliveries are queued and taken one at a
 * time with {@link next}; the broker stops at `prefetch` unacked ones, which bounds the queue.
 * Every delivery must be acked, also those the reader skips: on 3.10 a nack or reject on a
 * stream closes the channel.
 */
export class StreamCursor {
  private readonly buffered: StreamMessage[] = [];
  private waiter: ((value: StreamMessage | undefined) => void) | undefined;
  private failed: ((error: Error) => void) | undefined;
  private ended: Error | null | undefined;
  private closedByUs = false;

  private constructor(
    private readonly channel: Channel,
    private readonly acks: AckCoalescer,
  ) {}

  /**
   * Attach to `stream` at `offset`. `onEnd` is called once if the channel goes without our
   * {@link close} (connection lost, stream deleted): with the reason.
   */
  static async open(model: ChannelModel, stream: string, offset: StreamOffset, prefetch: number, onEnd?: (error: Error) => void): Promise<StreamCursor> {
    const channel = await model.createChannel();
    const cursor = new StreamCursor(channel, new AckCoalescer(channel));
    const lost = (error: Error) => {
      if (cursor.closedByUs || cursor.ended !== undefined) return;
      cursor.finish(error);
      onEnd?.(error);
    };
    channel.on('error', (error: Error) => lost(error));
    channel.on('close', () => lost(new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, `the log's channel on ${stream} closed`)));
    try {
      await channel.prefetch(prefetch);
      await channel.consume(
        stream,
        (message) => {
          // The broker cancels the consumer when the stream is deleted: amqplib hands us null.
          if (message === null) {
            lost(new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, `the log ${stream} was deleted`));
            channel.close().catch(() => {});
            return;
          }
          cursor.acks.track(message);
          cursor.push(toStreamMessage(message));
        },
        { noAck: false, arguments: { 'x-stream-offset': offset } },
      );
    } catch (error) {
      await channel.close().catch(() => {});
      throw error;
    }
    return cursor;
  }

  /** The next delivery, in offset order; undefined once closed. Rejects when the channel was lost. */
  next(): Promise<StreamMessage | undefined> {
    const item = this.buffered.shift();
    if (item) return Promise.resolve(item);
    if (this.ended === null) return Promise.resolve(undefined);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failed = reject;
    });
  }

  ack(item: StreamMessage): void {
    this.acks.ack(item.message);
  }

  /** Stop: pending {@link next} calls resolve undefined, and the channel closes. */
  async close(): Promise<void> {
    if (this.closedByUs) return;
    this.closedByUs = true;
    // What is buffered is not handed out: the channel's close gives it back to the stream.
    this.buffered.length = 0;
    this.finish(null);
    await this.channel.close().catch(() => {});
  }

  private push(item: StreamMessage): void {
    if (this.ended !== undefined) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      this.failed = undefined;
      waiter(item);
    } else {
      this.buffered.push(item);
    }
  }

  private finish(error: Error | null): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    const { waiter, failed } = this;
    this.waiter = undefined;
    this.failed = undefined;
    if (error) failed?.(error);
    else waiter?.(undefined);
  }
}

function toStreamMessage(message: ConsumeMessage): StreamMessage {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const offset = headers['x-stream-offset'];
  const marker = headers[LOG_MARKER_HEADER];
  return {
    offset: typeof offset === 'number' ? offset : Number(offset),
    marker: typeof marker === 'string' ? marker : marker === undefined ? undefined : String(marker),
    message,
  };
}

/**
 * Decides, delivery by delivery, where a read really starts: the broker attaches at chunk
 * granularity, so entries before the position asked for come first and are skipped here.
 */
export class StartGate {
  private seenFirst = false;
  private started: boolean;

  constructor(private readonly from: LogStart) {
    this.started = !(typeof from === 'object' && 'time' in from);
  }

  /** Whether `m` is at or past the start. @throws CURSOR_EXPIRED when `{ after }`'s entry is gone. */
  admit(m: StreamMessage): boolean {
    const { from } = this;
    if (typeof from === 'object' && 'after' in from) {
      if (!this.seenFirst) {
        this.seenFirst = true;
        if (m.offset > Math.max(from.after, 0)) throw cursorExpired(from.after, m.offset);
      }
      return m.offset > from.after;
    }
    if (!this.started) {
      if (m.marker !== undefined) return false;
      const time = timeOf(m);
      if (time !== undefined && typeof from === 'object' && 'time' in from && time < from.time.getTime()) return false;
      this.started = true;
    }
    return true;
  }
}

/** When the entry was published, ms: the relay's `x-tributary-time` (set on every publish). */
export function timeOf(m: StreamMessage): number | undefined {
  const value = (m.message.properties.headers as Record<string, unknown> | undefined)?.[Headers.time];
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  return Number.isFinite(n) ? n : undefined;
}
