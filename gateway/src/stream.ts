import type { Envelope } from '@tributary/contracts';
import { ApiErrorCode } from '@tributary/core';
import { conditionHolds, KEY_VARIABLE, keyValue, takeHidden, valueAt, type SubscriptionBinding } from '@tributary/core/bindings';
import { SpanKind, withSpan } from '@tributary/core/tracing';
import type { ExecutionResult } from 'graphql';
import { GraphQLError } from 'graphql';
import { contractOf } from './cache/index.ts';
import type { GatewayContext } from './context.ts';
import type { ListenSpec } from './event-hub.ts';
import { Backlog } from './backlog.ts';
import { cursorAt, failureMessage, Replay, resumeOffset, type Due, type LogSource } from './resume.ts';
import { closedSubscribers } from './slow-subscribers.ts';
import type { EventSubscriptionsOptions, StreamSpec } from './subscriptions.ts';

/**
 * What a read of the client's selection found: the state it showed and whether that completes
 * the stream; 'gone' when the entity is not there (NOT_FOUND sent for a keyed stream); undefined
 * when the read failed (its errors sent).
 */
type Read = { state: string; done: boolean } | 'gone' | undefined;

/** Where a stream stands after its first read: ended, or waiting for events since the state `last`. */
type Start = { end: true } | { end: false; last: string | undefined };

const closed = closedSubscribers();

/**
 * A running subscription: the events it listens for, buffered until it reads them; its first
 * read (or, resuming, the history after its cursor); then one read of the client's selection
 * per matching event, until it completes or the client goes. What is due to the client (events
 * not yet resolved, results not yet sent) is bounded by `maxQueued` ({@link Backlog}): beyond it,
 * the client's connection is closed as too slow, or with a log a burst is read again from it.
 */
export class Stream extends Backlog {
  private readonly listening: ListenSpec;
  private readonly binding: SubscriptionBinding;
  /** The log the hub follows, if any: messages then carry cursors. */
  private readonly source: LogSource | undefined;
  /** The hub's position when the stream began listening: the cursor of a message read from state. */
  private readonly startOffset: number | undefined;
  /** Reading the log: resuming after a cursor, or catching up after a burst. */
  private replay: Replay | undefined;
  /** A cursor that cannot be resumed from: sent as the stream's only message. */
  private readonly refused: unknown;
  private readonly abort = new AbortController();
  private stopListening: (() => void) | undefined;

  constructor(
    private readonly s: StreamSpec,
    private readonly options: EventSubscriptionsOptions,
  ) {
    // The client going away (or the stream ending) also stops the listening and the replay.
    super(options.maxQueued, () => {
      this.stopListening?.();
      this.abort.abort();
    });
    this.binding = s.binding;
    // Only the subscriber's own tenant's events (the hub's index); the query is tenant-scoped as well.
    this.listening = { events: s.binding.events, tenantId: s.context.tenantId, ...(s.match[0] ? { index: s.match[0] } : {}) };
    this.source = options.hub.source;
    this.startOffset = options.hub.position;
    const resume = this.resumeFrom();
    this.refused = resume.refused;
    this.replay = resume.replay;
    this.lastTaken = resume.after ?? this.startOffset;
    // Listening starts now, whatever the first read or the replay take: nothing is missed meanwhile.
    this.stopListening = options.hub.listen(this.listening, (event, offset) => this.receive(event, offset));
  }

  async run(): Promise<void> {
    try {
      if (this.refused !== undefined) throw this.refused;
      if (this.replay) await this.resume(this.replay);
      else {
        const start = await this.start();
        if (!start.end) await this.follow(start.last);
      }
    } catch (error) {
      this.queue.push(this.failure(error));
    } finally {
      this.queue.end();
    }
  }

  /** The replay `extensions.after` asks for, or why it cannot be. */
  private resumeFrom(): { replay?: Replay; after?: number; refused?: unknown } {
    try {
      const after = resumeOffset(this.s.context.subscription?.after, this.source);
      if (after === undefined || !this.source) return {};
      return { replay: this.replayAfter(this.source, after), after };
    } catch (error) {
      return { refused: error };
    }
  }

  private replayAfter(source: LogSource, after: number): Replay {
    const signal = this.abort.signal;
    return new Replay({ source, after, events: this.binding.events, accepts: (e) => this.accepts(e), deliver: (d) => this.deliver(d), maxHeld: this.options.maxQueued, signal });
  }

  /**
   * Resumed: the history after the cursor, then the live events, each read as a live one is. No
   * first read: the client holds the state up to its cursor (docs/subscriptions.md).
   */
  private async resume(replay: Replay): Promise<void> {
    // Following from the start, so replayed events are sent as they are read; its end (a message
    // that completes the stream, a failure) ends the queue, which stops the replay.
    const following = this.follow(undefined).then(
      () => this.queue.end(),
      (error: unknown) => {
        this.queue.push(this.failure(error));
        this.queue.end();
      },
    );
    try {
      await replay.run();
    } catch (error) {
      if (!this.queue.closed) this.queue.push(this.failure(error));
      this.queue.end();
    }
    await following;
  }

  private failure(error: unknown): ExecutionResult {
    return failureMessage(error, this.options.logger, this.binding.field);
  }

  private matches(event: Envelope): boolean {
    if (!this.s.match.every((m) => keyValue(valueAt(event.data, m.path)) === m.value)) return false;
    return !this.binding.where || conditionHolds(this.binding.where, event.data);
  }

  /** What the hub's index and checks give a live listener, for an event read from the log. */
  private accepts(event: Envelope): boolean {
    if (event.tenantid !== this.s.context.tenantId || !this.binding.events.includes(event.dataschema)) return false;
    return this.matches(event) && contractOf(event.dataschema)?.safeParse(event.data).success !== false;
  }

  private receive(event: Envelope, offset: number | undefined): void {
    if (!this.matches(event)) return;
    const due = { event, offset };
    if (this.replay && !this.replay.hear(due)) return;
    this.enqueue(due);
  }

  protected override overflow(): void {
    // Mostly events not yet resolved, the client keeping up with the results: a burst. With a
    // log they are dropped and read again from it, as fast as they are resolved.
    if (this.source && this.lastTaken !== undefined && this.queue.length < this.maxQueued >> 1) this.catchUp(this.source, this.lastTaken);
    else this.tooSlow();
  }

  /** Drop the events waiting to be resolved and read them from the log instead, then go live again. */
  private catchUp(source: LogSource, after: number): void {
    this.pending.length = 0;
    const replay = this.replayAfter(source, after);
    this.replay = replay;
    replay.run().catch((error: unknown) => {
      if (!this.queue.closed) this.queue.push(this.failure(error));
      this.queue.end();
    });
  }

  /** More is due than the bound allows: the connection is closed (4008), counted and logged. */
  private tooSlow(): void {
    closed.inc({ reason: 'too_slow' });
    this.options.logger.warn({ field: this.binding.field, tenantId: this.s.context.tenantId, due: this.due, max: this.maxQueued }, 'subscriber too slow: closing its connection');
    // The close first: the stream's completion must not reach the client before it (graphql-ws'
    // client would take the stream as ended and not come back).
    this.s.context.subscription?.tooSlow();
    this.pending.length = 0;
    void this.queue.return();
  }

  /**
   * A known entity is read first: it may not exist, or be complete already. A tenant-wide value
   * is read first when there is something to learn from it.
   */
  private async start(): Promise<Start> {
    const { binding } = this;
    const known = this.s.key !== undefined || (!binding.key && (binding.initial || binding.completeWhen !== undefined || binding.state !== undefined));
    if (!known) return { end: false, last: undefined };
    return binding.initial ? this.sendFirst() : this.readState();
  }

  /** Sent first: the whole message is the read. */
  private async sendFirst(): Promise<Start> {
    const read = await this.emit(undefined, this.s.key, undefined, this.startOffset);
    if (read === 'gone') return this.s.key !== undefined ? { end: true } : { end: false, last: undefined };
    if (!read || read.done) return { end: true };
    return { end: false, last: read.state };
  }

  /** Not sent first: the hidden fields alone are read, to learn whether the stream is over already. */
  private async readState(): Promise<Start> {
    const { s, binding } = this;
    const current = await this.options.execute(s.stateQuery, this.variablesFor(s.key), s.context);
    // A failed read is not "not found": report it rather than say NOT_FOUND.
    if (current.errors?.length) {
      this.queue.push({ errors: current.errors });
      return { end: true };
    }
    const value = (current.data as Record<string, Record<string, unknown> | null> | undefined)?.[s.responseKey];
    if (value === null || value === undefined) {
      if (s.key === undefined) return { end: false, last: undefined };
      this.queue.push({ data: null, errors: [this.notFound(s.key)] });
      return { end: true };
    }
    const hidden = takeHidden(value);
    if (this.completes(hidden)) {
      const cause = this.pending.at(-1)?.event ?? (s.match[0] ? this.options.hub.latest({ ...this.listening, index: s.match[0] }) : undefined);
      await this.emit(cause, s.key, undefined, this.startOffset);
      return { end: true };
    }
    // CHANGES compares with the state just read: an event that says what was already true (the
    // view catching up with the upload) is no change.
    return { end: false, last: binding.state ? JSON.stringify(hidden) : undefined };
  }

  /** One read per matching event, until a message completes the stream or the client goes. */
  private async follow(last: string | undefined): Promise<void> {
    const { s, binding } = this;
    while (!this.queue.closed) {
      const due = await this.nextEvent();
      if (!due || this.queue.closed) continue;
      const { event } = due;
      const key = s.key ?? (binding.key ? keyValue(valueAt(event.data, binding.key)) : undefined);
      if (binding.key && key === undefined) {
        this.options.logger.warn({ field: binding.field, dataschema: event.dataschema, id: event.id }, 'subscription: the event has no key at its binding path; ignored');
        continue;
      }
      // A message read after a later change may show that change already: the stream ends on
      // the first message that completes it.
      const read = await this.emit(event, key, last, due.offset);
      if (read === 'gone') {
        if (s.key !== undefined) return;
      } else if (read === undefined) {
        // The read failed (its errors were sent): a stream waiting for its completion had it.
        if (binding.send === 'COMPLETION') return;
      } else if (read.done) return;
      else last = read.state;
    }
  }

  /**
   * Resolve the client's selection for the entity `key`; send it unless the mode says not to,
   * with the cursor of `offset` (the event's, or where the stream started for a read of state).
   */
  private async emit(event: Envelope | undefined, key: string | undefined, last: string | undefined, offset: number | undefined): Promise<Read> {
    const { s, binding } = this;
    // The message continues the trace of the event that caused it (the upload's, end to end).
    const result = await withSpan(`gateway subscription ${binding.field}`, SpanKind.CONSUMER, event?.traceparent, { 'graphql.operation.type': 'subscription', ...(key !== undefined ? { 'tributary.entity.key': key } : {}) }, () =>
      this.options.execute(s.query, this.variablesFor(key), s.context),
    );
    const data = result.data as Record<string, Record<string, unknown> | null> | null | undefined;
    const value = data?.[s.responseKey];
    if (data && value === null && !result.errors?.length) {
      if (s.key !== undefined) this.queue.push({ data: null, errors: [this.notFound(s.key)] });
      return 'gone';
    }
    if (!value) {
      this.queue.push(result);
      return undefined;
    }
    const hidden = takeHidden(value);
    const state = JSON.stringify(binding.state ? hidden : value);
    const done = this.completes(hidden);
    const send = binding.send === 'EVERY' || (binding.send === 'CHANGES' ? state !== last : done);
    if (send) this.queue.push(this.source && offset !== undefined ? { ...result, extensions: { ...result.extensions, cursor: cursorAt(this.source, offset) } } : result);
    return { state, done };
  }

  private notFound(id: string): GraphQLError {
    return new GraphQLError(`${this.binding.entity} ${id} not found`, { extensions: { code: ApiErrorCode.NOT_FOUND, type: this.binding.entity, id } });
  }

  private variablesFor(key: string | undefined): Record<string, unknown> | undefined {
    return key === undefined ? this.s.variables : { ...this.s.variables, [KEY_VARIABLE]: key };
  }

  private completes(hidden: Record<string, unknown>): boolean {
    return this.binding.completeWhen !== undefined && conditionHolds(this.binding.completeWhen, hidden);
  }
}

