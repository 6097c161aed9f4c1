/**
 * The event log: every event published to the events exchange, retained in publish order for
 * `EVENT_LOG_RETENTION`, readable from any position. The queues beside it keep only what their
 * consumer has not taken yet; the log keeps history, so a service that joins late can build its
 * views from the past, a view can be rebuilt, and a subscription can resume where it left off.
 *
 * Implementations: a RabbitMQ stream each publish writes to (`log-rabbitmq.ts`), a table in
 * the embedded database (`log-sql.ts`) and an array (`log-memory.ts`, tests and single-process
 * use without a database). `testing/log-contract.ts` holds the suite all of them pass.
 */
import { CoreErrorCode, TributaryError } from '../errors.ts';
import type { OutgoingMessage } from './transport.ts';

/** One retained event, as it was published. */
export interface LogEntry {
  /** Its position: offsets grow with publish order and are never reused. A safe integer. */
  readonly offset: number;
  readonly messageId: string | undefined;
  /** The event type it was published with. */
  readonly routingKey: string;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly body: Buffer;
}

/**
 * Where a read starts: the oldest entry kept, the entries after a known offset (the one after
 * the cursor a client holds), the first entry stored at or after a time, or only what is appended
 * from now on.
 */
export type LogStart = 'beginning' | 'end' | { after: number } | { time: Date };

export interface LogReadOptions {
  from: LogStart;
  /** Only entries whose routing key matches one of these topic patterns (`*`, `#`); all when absent. */
  types?: readonly string[];
}

export interface LogFollowHandle {
  /** Stop: no entry is handed out after this resolves. */
  close(): Promise<void>;
}

export interface LogStats {
  /**
   * Entries kept. On RabbitMQ, which tells offsets only, the stream's records instead: one per
   * publish (a relay batch, up to 1,024 events), markers included.
   */
  entries: number;
  /** Bytes kept, where known. */
  bytes: number | undefined;
  /** Offset of the oldest entry kept, undefined when empty. */
  first: number | undefined;
  /** Offset of the newest entry (on RabbitMQ the end's position, just past it), undefined when empty. */
  last: number | undefined;
  /** Age of the oldest entry kept, seconds (0 when empty). */
  oldestAgeSeconds: number;
}

export interface EventLog {
  readonly kind: 'rabbitmq' | 'redis' | 'nats' | 'embedded' | 'memory';
  /**
   * Every entry from `from` up to the log's end as it stands when the call begins, in offset
   * order, each awaited in turn (a slow handler slows the read, nothing piles up). Resolves with
   * the offset of the last entry read (the last one kept by `types` or not: resuming after it
   * skips nothing), or undefined when there was none.
   *
   * @throws TributaryError `CURSOR_EXPIRED` when `from` is `{ after }` and entries after it are
   *   no longer kept (retention removed them): the reader must start again from a snapshot. Also
   *   for a position past the log's end (not one of this log's). On RabbitMQ, whose offsets have
   *   gaps, as soon as the entry at `after` itself is gone.
   *
   * On RabbitMQ a read that loses its channel or connection attaches again where it was; the
   * other implementations have no connection to lose.
   */
  read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined>;
  /**
   * Like {@link read}, then every entry appended later as it comes, in order, until closed. The
   * handler is not awaited: a follower that falls behind buffers, bounded by the broker's prefetch
   * where there is one. Same `CURSOR_EXPIRED` as `read`.
   */
  follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle>;
  /** Size and age, for `/metrics` and the tools. */
  stats(): Promise<LogStats>;
}

/** A log the in-memory bus writes itself, as a broker would: each publish is appended before it is routed. */
export interface AppendableLog extends EventLog {
  append(messages: readonly OutgoingMessage[]): Promise<void> | void;
}

/** Refused: entries after the position asked for are no longer kept. */
export function cursorExpired(after: number, first: number): TributaryError {
  return new TributaryError(CoreErrorCode.CURSOR_EXPIRED, `the log no longer keeps the entries after offset ${after} (its oldest is ${first}): start again from the current state`);
}

/** Refused: the position is past the log's end, so it is not one of this log's (another log's, or made up). */
export function cursorPastEnd(after: number, last: number): TributaryError {
  return new TributaryError(CoreErrorCode.CURSOR_EXPIRED, `offset ${after} is past the log's end (${last}): it is not a position in this log`);
}

/**
 * A client's cursor: opaque to it, the log's offset to us. `logId` tells one log from another
 * (a namespace's stream re-created starts its offsets again), so a cursor from another log is
 * refused instead of silently skipping or replaying.
 */
export interface Cursor {
  logId: string;
  offset: number;
}

export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify([cursor.logId, cursor.offset]), 'utf8').toString('base64url');
}

/** @throws TributaryError `CURSOR_INVALID` when the string is not a cursor we made. */
export function decodeCursor(value: string): Cursor {
  try {
    if (value.length > 512) throw new Error('too long');
    const parsed: unknown = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
    if (Array.isArray(parsed) && parsed.length === 2 && typeof parsed[0] === 'string' && Number.isSafeInteger(parsed[1]) && (parsed[1] as number) >= -1) {
      return { logId: parsed[0], offset: parsed[1] as number };
    }
  } catch {
    // fall through: any malformed cursor gets the same answer
  }
  throw new TributaryError(CoreErrorCode.CURSOR_INVALID, 'not a cursor this gateway issued');
}
