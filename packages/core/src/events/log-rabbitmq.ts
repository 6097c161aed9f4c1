import { randomUUID } from 'node:crypto';
import type { ChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { CoreErrorCode, TributaryError, errorCode, errorMessage } from '../errors.ts';
import { cursorExpired, cursorPastEnd, type EventLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStats } from './log.ts';
import { LOG_MARKER_HEADER, recordOffset, StartGate, StreamCursor, timeOf, type StreamMessage, type StreamOffset } from './log-rabbitmq-stream.ts';
import { StreamFollower } from './log-rabbitmq-follow.ts';
import { topicMatches } from './transport.ts';

/** `<ns>.events.log`: the stream every publish also writes its events to, packed (`log-rabbitmq-pack.ts`). */
export const logStreamName = (namespace: string) => `${namespace}.events.log`;

/** How long and how much the log keeps. Both limits apply; whole segments go once past either. */
export interface LogRetention {
  maxAgeMs?: number;
  maxBytes?: number;
}

export interface RabbitMqLogOptions extends LogRetention {
  /**
   * Size of one stream segment file (`x-stream-max-segment-size-bytes`). Retention drops whole
   * segments, so the log keeps up to one segment more than `maxBytes`. Default: the broker's (500 MB).
   * Tests set it tiny so retention shows.
   */
  maxSegmentBytes?: number;
}

/** What the log needs from its transport. */
export interface RabbitMqLogContext {
  namespace: string;
  logger: Logger;
  /** The current connection, waiting for one if needed. */
  model(): Promise<ChannelModel>;
  /** A message straight to a queue, confirmed by the broker. */
  sendToQueue(queue: string, message: { body: Buffer; messageId: string | undefined; headers: Record<string, unknown> }): Promise<void>;
}

const READ_PREFETCH = 200;
const TIME_SEEK_MARGIN_S = 60;

/**
 * Declare the log's stream (on every connection, in the
 * transport's setup). A stream's retention arguments are fixed by its first declaration: a
 * different `EVENT_LOG_RETENTION` later makes the declare fail (406 PRECONDITION_FAILED). Then
 * the existing stream is kept as it is and a warning says so: change a live stream's retention
 * with a policy (`rabbitmqctl set_policy … '{"max-age":"14D"}' --apply-to queues`).
 */
export async function declareLogStream(model: ChannelModel, namespace: string, options: RabbitMqLogOptions, logger: Logger): Promise<void> {
  const name = logStreamName(namespace);
  const args: Record<string, unknown> = { 'x-queue-type': 'stream' };
  if (options.maxAgeMs !== undefined) args['x-max-age'] = `${Math.max(1, Math.ceil(options.maxAgeMs / 1000))}s`;
  if (options.maxBytes !== undefined) args['x-max-length-bytes'] = options.maxBytes;
  if (options.maxSegmentBytes !== undefined) args['x-stream-max-segment-size-bytes'] = options.maxSegmentBytes;
  let channel = await model.createChannel();
  channel.on('error', () => {});
  try {
    await channel.assertQueue(name, { durable: true, arguments: args });
  } catch (error) {
    if ((error as { code?: unknown }).code !== 406) throw error;
    // The failed declare closed that channel; the stream exists with other arguments.
    channel = await model.createChannel();
    channel.on('error', () => {});
    await channel.checkQueue(name);
    logger.warn(
      { stream: name, wanted: args, err: errorMessage(error) },
      'the event log stream exists with other retention arguments: keeping it as it is (docs/operations.md, The event log, says how to change it)',
    );
  }
  await channel.close().catch(() => {});
}

/**
 * The log as a RabbitMQ stream (3.9+): each publish writes its events, packed into one record,
 * to the stream before it publishes them to the exchange, on the same confirm channel, and
 * resolves once both are confirmed (`rabbitmq-publish.ts`). Read over AMQP 0-9-1: each read or
 * follow attaches its own consumer at an `x-stream-offset` on a channel of its own and acks
 * everything; the records are unpacked into entries at their own offsets.
 *
 * The broker reports no end offset over 0-9-1, so a read finds "the end as of the call" by
 * writing a marker message straight to the stream and reading up to it; markers are skipped.
 * Offsets are not dense (the broker uses some for its own records, and a record's entries take
 * PACK_SIZE), so a cursor `{ after: n }` is checked by seeing entry n itself again: if the first
 * offset delivered is past n, n was removed by retention and the cursor has expired.
 */
export class RabbitMqEventLog implements EventLog {
  readonly kind = 'rabbitmq' as const;
  readonly stream: string;

  constructor(private readonly context: RabbitMqLogContext) {
    this.stream = logStreamName(context.namespace);
  }

  async read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined> {
    const { from } = options;
    // Nothing is stored at or after a time still to come (as of the call, as for any read).
    if (from === 'end' || signal?.aborted || (typeof from === 'object' && 'time' in from && from.time.getTime() > Date.now())) return undefined;
    const model = await this.context.model();
    let stopAt: number | undefined;
    let markerId: string | undefined;
    let offset: StreamOffset;
    if (typeof from === 'object' && 'after' in from) {
      stopAt = await this.endOffset(model);
      await this.assertPosition(model, from.after, stopAt);
      offset = Math.max(from.after, 0);
    } else {
      markerId = randomUUID();
      await this.writeMarker(markerId);
      offset = from === 'beginning' ? 'first' : timestampOffset(from.time);
    }
    const gate = new StartGate(from);
    let cursor = await StreamCursor.open(model, this.stream, offset, READ_PREFETCH);
    // Closes whichever cursor is current when the signal comes.
    const abort = () => void cursor.close();
    signal?.addEventListener('abort', abort, { once: true });
    let last: number | undefined;
    /** The last offset gone through (entries, skipped ones and markers), and whether we just attached again after it. */
    let position: number | undefined;
    let resumed = false;
    try {
      for (;;) {
        let m: StreamMessage | undefined;
        try {
          m = await cursor.next();
        } catch (error) {
          if (signal?.aborted) break;
          // The channel or the connection went mid-read: attach again where we were.
          cursor = await this.attachAgain(position ?? offset, error);
          resumed = position !== undefined;
          continue;
        }
        if (!m || signal?.aborted) break;
        try {
          if (resumed) {
            resumed = false;
            // Attached at `position`, the broker starts at or before it unless retention took it meanwhile.
            if (m.offset > position!) throw cursorExpired(position!, m.offset);
          }
          if (position !== undefined && m.offset <= position) continue;
          position = m.offset;
          if ((markerId !== undefined && m.marker === markerId) || (stopAt !== undefined && m.offset >= stopAt)) break;
          if (!gate.admit(m) || m.marker !== undefined) continue;
          last = m.offset;
          const entry = toEntry(m);
          if (matchesTypes(options, entry)) await onEntry(entry);
        } finally {
          cursor.ack(m);
        }
      }
    } finally {
      signal?.removeEventListener('abort', abort);
      await cursor.close();
    }
    return last;
  }

  /** A read's cursor again at `offset`, on the transport's connection once it is back (about 20 s at most). */
  private async attachAgain(offset: StreamOffset, cause: unknown): Promise<StreamCursor> {
    let delay = 100;
    let lastError = cause;
    for (let attempt = 0; attempt < 12; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 2_000);
      try {
        return await StreamCursor.open(await this.context.model(), this.stream, offset, READ_PREFETCH);
      } catch (error) {
        if (errorCode(error) === CoreErrorCode.TRANSPORT_CLOSED) throw error;
        lastError = error;
      }
    }
    throw lastError;
  }

  async follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle> {
    const { from } = options;
    const model = await this.context.model();
    let offset: StreamOffset = 'next';
    if (from === 'beginning') offset = 'first';
    else if (typeof from === 'object' && 'time' in from) offset = timestampOffset(from.time);
    else if (typeof from === 'object') {
      await this.assertPosition(model, from.after, await this.endOffset(model));
      offset = Math.max(from.after, 0);
    }
    const follower = new StreamFollower({
      stream: this.stream,
      model: () => this.context.model(),
      logger: this.context.logger,
      gate: new StartGate(from),
      initialOffset: offset,
      onEntry: (m) => {
        const entry = toEntry(m);
        if (matchesTypes(options, entry)) onEntry(entry);
      },
    });
    await follower.start(model);
    // From the end: a marker pins the follower's position, so a reconnection before the first
    // entry resumes from here instead of from whatever is the end by then.
    if (from === 'end') {
      await this.writeMarker(randomUUID()).catch(async (error: unknown) => {
        await follower.close();
        throw error;
      });
    }
    return follower;
  }

  /**
   * Approximate where the broker only tells offsets: `entries` is the number of stream records
   * from the oldest entry to the end (one per publish, of up to PACK_SIZE events; markers and the
   * broker's own records included), `bytes` unknown over AMQP 0-9-1; `last` the end's position. (`checkQueue`'s messageCount on a 3.10 stream lags by seconds and is not used.)
   * The age is that of the oldest entry's `x-tributary-time`.
   */
  async stats(): Promise<LogStats> {
    const model = await this.context.model();
    const end = await this.endOffset(model);
    const cursor = await StreamCursor.open(model, this.stream, 'first', 50);
    let oldest: StreamMessage | undefined;
    try {
      for (let m = await cursor.next(); m; m = await cursor.next()) {
        cursor.ack(m);
        if (m.offset >= end) break;
        if (m.marker === undefined) {
          oldest = m;
          break;
        }
      }
    } finally {
      await cursor.close();
    }
    if (!oldest) return { entries: 0, bytes: undefined, first: undefined, last: undefined, oldestAgeSeconds: 0 };
    const time = timeOf(oldest);
    return {
      entries: recordOffset(end) - recordOffset(oldest.offset),
      bytes: undefined,
      first: oldest.offset,
      // The end's marker: a record the stream holds, so `{ after: last }` attaches there (an
      // offset before it may be one the broker spent on its own records, and read as expired).
      last: end,
      oldestAgeSeconds: time === undefined ? 0 : Math.max(0, (Date.now() - time) / 1000),
    };
  }

  /** The offset of a marker written now: every entry before it was in the log when this was called. */
  private async endOffset(model: ChannelModel): Promise<number> {
    const id = randomUUID();
    // Attached at 'next' before the marker is written, so the marker is among what it gets.
    const cursor = await StreamCursor.open(model, this.stream, 'next', READ_PREFETCH);
    try {
      await this.writeMarker(id);
      for (let m = await cursor.next(); m; m = await cursor.next()) {
        cursor.ack(m);
        if (m.marker === id) return m.offset;
      }
      throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the log closed while finding its end');
    } finally {
      await cursor.close();
    }
  }

  /**
   * Whether `after` is a position of this log, before `end`: the entry (or marker) at it is still
   * kept (else CURSOR_EXPIRED: retention took it), and it exists (an offset past a record's last
   * entry, or past the end, was never one: CURSOR_EXPIRED too, as past the end).
   */
  private async assertPosition(model: ChannelModel, after: number, end: number): Promise<void> {
    if (after >= end) throw cursorPastEnd(after, end);
    if (after < 0) return;
    const cursor = await StreamCursor.open(model, this.stream, after, READ_PREFETCH);
    try {
      // The broker attaches at the chunk holding the record: what comes first is at or before it.
      let first = true;
      for (let m = await cursor.next(); m; m = await cursor.next()) {
        cursor.ack(m);
        if (m.offset === after) return;
        if (m.offset > after) throw first ? cursorExpired(after, m.offset) : cursorPastEnd(after, end);
        first = false;
      }
      throw new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'the log closed while checking a position');
    } finally {
      await cursor.close();
    }
  }

  private writeMarker(id: string): Promise<void> {
    return this.context.sendToQueue(this.stream, { body: Buffer.alloc(0), messageId: undefined, headers: { [LOG_MARKER_HEADER]: id } });
  }
}

/**
 * The broker seeks by chunk timestamps in seconds, by its own clock: a minute earlier (a broker
 * clock behind ours must not put the seek past a read's end marker), then the gate skips by our
 * time header.
 */
function timestampOffset(time: Date): StreamOffset {
  return { '!': 'timestamp', value: Math.max(0, Math.floor(time.getTime() / 1000) - TIME_SEEK_MARGIN_S) };
}

function toEntry(m: StreamMessage): LogEntry {
  // Markers never get here: every caller skips them first.
  const { messageId, routingKey, headers, body } = m.entry!;
  return { offset: m.offset, messageId, routingKey, headers, body };
}

function matchesTypes(options: LogReadOptions, entry: LogEntry): boolean {
  return !options.types || options.types.some((pattern) => topicMatches(pattern, entry.routingKey));
}
