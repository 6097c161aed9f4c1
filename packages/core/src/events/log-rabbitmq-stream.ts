import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { cursorExpired, type LogStart } from './log.ts';
import { AckCoalescer } from './rabbitmq-delivery.ts';
import { Headers } from './transport.ts';
import { LOG_PACK_HEADER, PACK_SIZE, unpack, type PackedEntry } from './log-rabbitmq-pack.ts';

/** Header of the marker messages a read writes to find the log's end (never handed to readers). */
export const LOG_MARKER_HEADER = 'x-tributary-log-marker';

/** Where a stream consumer attaches (`x-stream-offset`): RabbitMQ 3.9+ over AMQP 0-9-1. */
export type StreamOffset = 'first' | 'last' | 'next' | number | { '!': 'timestamp'; value: number };

/**
 * One entry of a stream record, at its offset (`log-rabbitmq-pack.ts`), or a marker (its id set,
 * no entry). `last`: the record's last item, whose ack acks the record.
 */
export interface StreamMessage {
  readonly offset: number;
  readonly marker: string | undefined;
  readonly entry: PackedEntry | undefined;
  readonly message: ConsumeMessage;
  readonly last: boolean;
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
          for (const item of toStreamMessages(message)) cursor.push(item);
        },
        { noAck: false, arguments: { 'x-stream-offset': typeof offset === 'number' ? recordOffset(offset) : offset } },
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

  /** Every item must be acked, in order: the record is acked with its last one. */
  ack(item: StreamMessage): void {
    if (item.last) this.acks.ack(item.message);
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

/** The record offset an entry offset lies in (a reader attaches there and skips what is before). */
export function recordOffset(offset: number): number {
  return Math.max(0, Math.floor(offset / PACK_SIZE));
}

/**
 * A record as its items: each packed event at its own offset, or the marker. A record without the
 * pack header is one event published as a message of its own (how the first version of the log
 * stored them): it stays readable.
 */
function toStreamMessages(message: ConsumeMessage): StreamMessage[] {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const raw = headers['x-stream-offset'];
  const base = (typeof raw === 'number' ? raw : Number(raw)) * PACK_SIZE;
  const marker = headers[LOG_MARKER_HEADER];
  if (marker !== undefined) return [{ offset: base, marker: String(marker), entry: undefined, message, last: true }];
  let entries: PackedEntry[];
  if (headers[LOG_PACK_HEADER] === undefined) {
    const { 'x-stream-offset': _, ...rest } = headers;
    entries = [{ messageId: message.properties.messageId as string | undefined, routingKey: message.fields.routingKey, headers: rest, body: message.content }];
  } else {
    try {
      entries = unpack(message.content);
    } catch {
      // Not a record we wrote (someone published to the stream by hand): its position passes, empty.
      entries = [];
    }
  }
  if (entries.length === 0) return [{ offset: base, marker: '', entry: undefined, message, last: true }];
  return entries.map((entry, i) => ({ offset: base + i, marker: undefined, entry, message, last: i === entries.length - 1 }));
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
  const value = m.entry?.headers[Headers.time];
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : Number.NaN;
  return Number.isFinite(n) ? n : undefined;
}
