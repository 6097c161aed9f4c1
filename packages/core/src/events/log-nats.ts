import { DeliverPolicy, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type OrderedConsumerOptions, type StreamState } from '@nats-io/jetstream';
import { cursorExpired, cursorPastEnd, type EventLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStats } from './log.ts';
import { fromNatsHeaders, payload } from './nats-headers.ts';
import { topicMatches } from './transport.ts';

/** What the log needs from its transport. */
export interface NatsLogContext {
  /** The events stream, which is the log. */
  stream: string;
  /** The subject prefix before an event's type. */
  prefix: string;
  js(): JetStreamClient;
  jsm(): JetStreamManager;
}

/** Where an ordered consumer starts, or nothing to read. */
type Start = { opts: Partial<OrderedConsumerOptions>; from: number | Date } | undefined;

/**
 * The log on NATS is the events stream itself: every publish is stored there once, its offset
 * is the stream sequence (gapless while retention only removes from the front), retention is
 * the stream's max_age/max_bytes. Reads and follows use an ordered consumer each: an ephemeral
 * consumer the client re-creates at the next sequence when a reconnection or a server restart
 * loses it, so a read or follow carries on after the last offset it handed out.
 */
export class NatsEventLog implements EventLog {
  readonly kind = 'nats' as const;

  constructor(private readonly ctx: NatsLogContext) {}

  private async state(): Promise<StreamState> {
    return (await this.ctx.jsm().streams.info(this.ctx.stream)).state;
  }

  /** The start of a read or follow; refuses a cursor past the end or whose next entries are gone. */
  private start(from: LogReadOptions['from'], state: StreamState): Start {
    const at = (seq: number): Start => ({ opts: { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: seq }, from: seq });
    if (from === 'beginning') return at(Math.max(state.first_seq, 1));
    if (from === 'end') return at(state.last_seq + 1);
    if ('after' in from) {
      if (from.after > state.last_seq) throw cursorPastEnd(from.after, state.last_seq);
      const next = Math.max(from.after + 1, 1);
      if (next < state.first_seq) throw cursorExpired(from.after, state.first_seq);
      return at(next);
    }
    return { opts: { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from.time.toISOString() }, from: from.time };
  }

  private entry(message: JsMsg): LogEntry {
    return {
      offset: message.seq,
      messageId: message.headers?.get('Nats-Msg-Id') || undefined,
      routingKey: message.subject.slice(this.ctx.prefix.length),
      headers: fromNatsHeaders(message.headers),
      body: payload(message.data),
    };
  }

  /** An ordered consumer from `start`, and how to be rid of it. */
  private async open(start: NonNullable<Start>): Promise<{ messages: ConsumerMessages; dispose(): void }> {
    const consumer = await this.ctx.js().consumers.get(this.ctx.stream, start.opts);
    const messages = await consumer.consume({ max_messages: 256 });
    return {
      messages,
      dispose: () => {
        messages.stop();
        // Else it stays on the server for the client's inactive_threshold (5 min); a failure
        // here (connection gone) leaves it to that threshold.
        void Promise.resolve()
          .then(() => consumer.delete())
          .catch(() => {});
      },
    };
  }

  async read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined> {
    const state = await this.state();
    const start = this.start(options.from, state);
    const end = state.last_seq;
    if (!start || state.messages === 0 || signal?.aborted) return undefined;
    if (typeof start.from === 'number' && start.from > end) return undefined;
    if (start.from instanceof Date) {
      // An ordered consumer waits for an entry at or after the time: make sure one exists up to the end.
      const last = await this.ctx.jsm().streams.getMessage(this.ctx.stream, { seq: end });
      if (!last || last.time.getTime() < start.from.getTime()) return undefined;
    }
    const matches = (key: string) => !options.types || options.types.some((t) => topicMatches(t, key));
    const { messages, dispose } = await this.open(start);
    let last: number | undefined;
    try {
      for await (const message of messages) {
        // Appended after the read began: not part of it.
        if (message.seq > end || signal?.aborted) break;
        const entry = this.entry(message);
        if (matches(entry.routingKey)) await onEntry(entry);
        last = message.seq;
        if (message.seq >= end || signal?.aborted) break;
      }
    } finally {
      dispose();
    }
    return last;
  }

  async follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle> {
    const start = this.start(options.from, await this.state());
    if (!start) throw new Error('unreachable: every start has a position');
    const matches = (key: string) => !options.types || options.types.some((t) => topicMatches(t, key));
    const { messages, dispose } = await this.open(start);
    let closed = false;
    const loop = (async () => {
      for await (const message of messages) {
        if (closed) break;
        const entry = this.entry(message);
        if (matches(entry.routingKey)) onEntry(entry);
      }
    })();
    return {
      close: async () => {
        closed = true;
        dispose();
        await loop.catch(() => {});
      },
    };
  }

  async stats(): Promise<LogStats> {
    const state = await this.state();
    const empty = state.messages === 0;
    return {
      entries: state.messages,
      bytes: state.bytes,
      first: empty ? undefined : state.first_seq,
      last: empty ? undefined : state.last_seq,
      oldestAgeSeconds: empty ? 0 : Math.max(0, (Date.now() - Date.parse(state.first_ts)) / 1000),
    };
  }
}
