/**
 * Resumable subscriptions: the cursor each message carries, and the replay of what a client
 * missed after its cursor, from the event log, handed over to the live events with no gap and
 * no double. See docs/subscriptions.md, "Resuming a subscription".
 */
import { parseEnvelope, type Envelope } from '@tributary/contracts';
import { ApiErrorCode, CoreErrorCode, TributaryError, type Logger } from '@tributary/core';
import { eventTypeOf } from '@tributary/core/bindings';
import { decodeCursor, encodeCursor, type EventLog } from '@tributary/core/events';
import { GraphQLError, type ExecutionResult } from 'graphql';

/** The gateway's own subscription error codes (the cursor's others are core's). */
export const SubscriptionErrorCode = {
  /** `after` given, but this gateway's bus keeps no event log (EVENT_LOG off): it cannot resume. */
  CURSOR_UNSUPPORTED: 'CURSOR_UNSUPPORTED',
} as const;

/** An event due to a stream, with its offset in the log when the hub follows one. */
export interface Due {
  event: Envelope;
  offset: number | undefined;
}

/** The log a hub follows and the name its cursors carry. */
export interface LogSource {
  log: EventLog;
  logId: string;
}

/** The cursor a message caused by the event at `offset` carries. */
export function cursorAt(source: LogSource, offset: number): string {
  return encodeCursor({ logId: source.logId, offset });
}

/**
 * The offset to resume after, from the subscribe payload's `extensions.after`; undefined when
 * the client did not ask to resume.
 * @throws TributaryError CURSOR_INVALID (not a cursor of ours, or of another log: the client
 *   refetches), CURSOR_UNSUPPORTED (no log)
 */
export function resumeOffset(after: unknown, source: LogSource | undefined): number | undefined {
  if (after === undefined || after === null) return undefined;
  if (typeof after !== 'string') throw new TributaryError(CoreErrorCode.CURSOR_INVALID, 'extensions.after must be a cursor string from a message’s extensions.cursor');
  if (!source) throw new TributaryError(SubscriptionErrorCode.CURSOR_UNSUPPORTED, 'this gateway keeps no event log: subscriptions cannot resume (subscribe without extensions.after)');
  const cursor = decodeCursor(after);
  // Offsets of another log (another namespace, or a stream re-created from zero) mean nothing here.
  if (cursor.logId !== source.logId) throw new TributaryError(CoreErrorCode.CURSOR_INVALID, 'the cursor is of another event log than this gateway’s: subscribe again without it');
  return cursor.offset;
}

const CURSOR_CODES: unknown[] = [CoreErrorCode.CURSOR_EXPIRED, CoreErrorCode.CURSOR_INVALID, SubscriptionErrorCode.CURSOR_UNSUPPORTED];

/**
 * The message a stream's failure makes, before it completes: a cursor it cannot resume from
 * gives its code in `extensions.code` (the client refetches); anything else is an internal
 * error, logged.
 */
export function failureMessage(error: unknown, logger: Logger, field: string): ExecutionResult {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && CURSOR_CODES.includes(code)) return { errors: [new GraphQLError((error as Error).message, { extensions: { code } })] };
  logger.error({ err: error instanceof Error ? error.message : String(error), field }, 'subscription failed');
  return { errors: [new GraphQLError('subscription failed', { extensions: { code: ApiErrorCode.INTERNAL_SERVER_ERROR } })] };
}

export interface ReplayOptions {
  source: LogSource;
  /** The offset of the client's cursor: the replay starts after it. */
  after: number;
  /** The stream's event versions (`<type>/v<n>`). */
  events: readonly string[];
  /** Whether the stream hears this event (its tenant, version, match and condition). */
  accepts(event: Envelope): boolean;
  /** Hand a replayed or held event to the stream once it has room for it (awaited: the read waits). */
  deliver(due: Due): Promise<void>;
  /** Most live events held while the history is read; beyond it they are dropped and read again from the log. */
  maxHeld: number;
  signal: AbortSignal;
}

/**
 * One resume: the history after the cursor, read from the log while the stream already listens
 * to the hub; the hub's events are held meanwhile. Once a pass reaches the log's end as it stood
 * when the pass began, the held events after that end are handed over, then the live ones: the
 * hub follows the whole log in order, so no event falls between the two, and one the history
 * covered (offset at or before the end reached) is dropped.
 */
export class Replay {
  private held: Due[] = [];
  private overflowed = false;
  private replaying = true;
  /** The last offset handed over (or covered by the history): what comes at or before it is dropped. */
  private last: number;

  constructor(private readonly options: ReplayOptions) {
    this.last = options.after;
  }

  /** A live event from the hub; true when the stream should take it now. */
  hear(due: Due): boolean {
    if (due.offset !== undefined && due.offset <= this.last) return false;
    if (!this.replaying) {
      if (due.offset !== undefined) this.last = due.offset;
      return true;
    }
    if (this.held.length >= this.options.maxHeld) {
      // Rather than hold without bound while a slow client reads the history, drop them: all
      // came after the current pass began, so the next pass reads them from the log.
      this.held = [];
      this.overflowed = true;
    }
    this.held.push(due);
    return false;
  }

  /**
   * Read the history, pass after pass until no held event was dropped, then hand the held ones
   * over, each once the stream has room (live events are still held meanwhile); the switch to
   * live happens with nothing held, in one synchronous step, so nothing can come between.
   * @throws TributaryError CURSOR_EXPIRED when the log no longer keeps what follows the cursor
   */
  async run(): Promise<void> {
    const { source, signal } = this.options;
    const types = [...new Set(this.options.events.map(eventTypeOf))];
    do {
      this.overflowed = false;
      const end = await source.log.read({ from: { after: this.last }, types }, (entry) => this.fromLog(entry.body, entry.offset), signal);
      if (end !== undefined && end > this.last) this.last = end;
      this.held = this.held.filter((due) => due.offset === undefined || due.offset > this.last);
      while (this.held.length > 0 && !this.overflowed && !signal.aborted) {
        const due = this.held.shift()!;
        if (due.offset !== undefined) this.last = Math.max(this.last, due.offset);
        await this.options.deliver(due);
      }
      // Held events dropped (too many while handing over): read them from the log again.
    } while (this.overflowed && !signal.aborted);
    this.replaying = false;
  }

  private async fromLog(body: Buffer, offset: number): Promise<void> {
    let event: Envelope;
    try {
      event = parseEnvelope(body);
    } catch {
      return; // the hub logged it when it went by live; a replay does not hear it either
    }
    if (!this.options.accepts(event)) return;
    await this.options.deliver({ event, offset });
  }
}
