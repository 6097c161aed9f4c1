import type { ChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { CoreErrorCode, errorCode, errorMessage } from '../errors.ts';
import type { LogFollowHandle } from './log.ts';
import { StreamCursor, type StartGate, type StreamMessage, type StreamOffset } from './log-rabbitmq-stream.ts';

const FOLLOW_PREFETCH = 500;

export interface StreamFollowerOptions {
  stream: string;
  model(): Promise<ChannelModel>;
  logger: Logger;
  gate: StartGate;
  initialOffset: StreamOffset;
  /** Each entry past the start, in order (markers already skipped). Not awaited. */
  onEntry(m: StreamMessage): void;
}

/**
 * A follower of the stream that outlives its channel: when the channel or the connection goes,
 * it attaches again after the last offset it went through, on whatever connection the transport
 * has by then, so nothing is handed out twice and nothing is skipped (unless retention removed it
 * meanwhile: then a warning says how much).
 */
export class StreamFollower implements LogFollowHandle {
  private cursor: StreamCursor | undefined;
  /** The last offset gone through (entries, skipped ones and markers alike). */
  private position: number | undefined;
  private closed = false;
  private running: Promise<void> | undefined;

  constructor(private readonly options: StreamFollowerOptions) {}

  /**
   * Attach. With `{ after }` the first delivery is awaited here, so an expired cursor rejects
   * the call instead of failing later where nobody listens.
   */
  async start(model: ChannelModel): Promise<void> {
    const cursor = await StreamCursor.open(model, this.options.stream, this.options.initialOffset, FOLLOW_PREFETCH);
    this.cursor = cursor;
    if (typeof this.options.initialOffset === 'number') {
      try {
        const first = await cursor.next();
        if (first) this.handle(cursor, first);
      } catch (error) {
        await this.close();
        throw error;
      }
    }
    this.running = this.pump(cursor);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.cursor?.close();
    await this.running;
  }

  private async pump(cursor: StreamCursor): Promise<void> {
    let current = cursor;
    for (;;) {
      try {
        for (let m = await current.next(); m; m = await current.next()) this.handle(current, m);
        return; // closed by us
      } catch (error) {
        if (this.closed) return;
        this.options.logger.warn({ stream: this.options.stream, position: this.position, err: errorMessage(error) }, 'event log follower lost its channel; attaching again');
        const next = await this.reattach();
        if (!next) return;
        current = next;
      }
    }
  }

  private handle(cursor: StreamCursor, m: StreamMessage): void {
    try {
      if (this.position !== undefined) {
        if (this.gapCheck) {
          this.gapCheck = false;
          // Attached again at `position`: the broker starts at the chunk holding it, so a first
          // delivery past it means retention removed it (and maybe more) meanwhile.
          if (m.offset > this.position) {
            this.options.logger.warn({ stream: this.options.stream, after: this.position, next: m.offset }, 'event log follower resumed past a gap: retention removed entries while it was away');
          }
        }
        if (m.offset <= this.position) return;
      }
      const admitted = this.options.gate.admit(m);
      this.position = m.offset;
      if (!admitted || m.marker !== undefined) return;
      try {
        this.options.onEntry(m);
      } catch (error) {
        this.options.logger.error({ stream: this.options.stream, offset: m.offset, err: errorMessage(error) }, 'event log follower handler threw');
      }
    } finally {
      cursor.ack(m);
    }
  }

  /** Set when attached again: the first delivery after `position` tells whether something was lost. */
  private gapCheck = false;

  private async reattach(): Promise<StreamCursor | undefined> {
    let delay = 200;
    while (!this.closed) {
      await new Promise((resolve) => setTimeout(resolve, delay).unref());
      if (this.closed) return undefined;
      try {
        const model = await this.options.model();
        // Offsets are not dense: attach at the last one seen (it is still there unless retention
        // took it) and skip it; the first delivery after it tells whether anything was lost.
        const offset = this.position ?? this.options.initialOffset;
        const cursor = await StreamCursor.open(model, this.options.stream, offset, FOLLOW_PREFETCH);
        if (this.closed) {
          await cursor.close();
          return undefined;
        }
        this.cursor = cursor;
        this.gapCheck = this.position !== undefined;
        return cursor;
      } catch (error) {
        if (errorCode(error) === CoreErrorCode.TRANSPORT_CLOSED) return undefined;
        delay = Math.min(delay * 2, 5_000);
      }
    }
    return undefined;
  }
}
