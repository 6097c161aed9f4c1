import { parseEnvelope, type Envelope } from '@tributary/contracts';
import { errorCode, errorMessage, type Logger } from '@tributary/core';
import { keyValue, valueAt, type Path } from '@tributary/core/bindings';
import { contractOf } from './cache/index.ts';
import { queueName, type ConsumerHandle, type EventLog, type LogEntry, type LogFollowHandle, type Transport } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';
import type { LogSource } from './resume.ts';

/** Hears an event, with its offset in the log when the hub follows one. */
type Listener = (event: Envelope, offset: number | undefined) => void;

/** Which events a listener hears: one tenant's, of these versions, and with `path` equal to `value` when given. */
export interface ListenSpec {
  events: readonly string[];
  tenantId: string;
  index?: { path: Path; value: string };
}

export interface EventHubOptions {
  instanceId?: string;
  /**
   * Sees every event first, before any subscription hears of it: a subscriber that reads after
   * its message never meets a cached result the event made stale.
   */
  onEvent?: (event: Envelope) => void;
  /**
   * This instance's queue was re-created (broker connection lost): events may have been missed.
   * Only without a log: following the log, the hub resumes after the last offset it saw.
   */
  onResubscribed?: () => void;
}

/** What the hub binds: event types (routing keys), and per event version the data paths listeners are indexed by. */
export interface HubBindings {
  types: readonly string[];
  paths: ReadonlyMap<string, readonly Path[]>;
}

const SEP = '\u0000';
const RECENT_LIMIT = 10_000;
const SEEN_LIMIT = 10_000;

/**
 * Delivers events to the subscriptions of this gateway instance. When the transport keeps an
 * event log, the hub follows the log (every replica reads it all) and each event carries its
 * offset, which subscriptions turn into cursors. Without one, each instance has its own
 * exclusive, auto-delete queue, so every replica sees every event and serves its own clients;
 * the gateway keeps no state worth retrying for, so events are acked at once.
 *
 * Listeners are indexed by tenant and by the value at one data path (`orderId`), so an event
 * reaches its own listeners only, however many streams are open.
 */
export class EventHub {
  private readonly listeners = new Map<string, Set<Listener>>();
  /** The latest event per indexed value, for the most recent ones: lets a late subscriber's message join its trace. */
  private readonly recent = new Map<string, Envelope>();
  /** Event ids already handled: while a re-bind runs two queues, an event can come through both. */
  private readonly seen = new Set<string>();
  private bindings: HubBindings = { types: [], paths: new Map() };
  private handle: ConsumerHandle | LogFollowHandle | undefined;
  private generation = 0;
  /** Following the log: the offset of the last entry dispatched (-1: the log was empty). */
  private offset: number | undefined;
  private readonly instanceId: string;

  constructor(
    private readonly transport: Transport,
    private readonly logger: Logger,
    private readonly options: EventHubOptions = {},
  ) {
    this.instanceId = options.instanceId ?? randomUUID();
  }

  /** The queue this instance consumes now. */
  get queue(): string {
    return queueName(this.transport.namespace, 'gateway', this.generation === 0 ? this.instanceId : `${this.instanceId}.${this.generation}`);
  }

  /**
   * Consume these event types. Called again with other types (a new supergraph), it opens a
   * queue bound to them before it closes the old one, so no event is missed meanwhile; one that
   * arrives through both is handled once.
   */
  async bind(bindings: HubBindings): Promise<void> {
    const same = this.handle && sameSet(bindings.types, this.bindings.types);
    this.bindings = bindings;
    if (same) return;
    const log = this.transport.log;
    if (log) return this.followLog(log, [...new Set(bindings.types)]);
    const previous = this.handle;
    if (previous) this.generation++;
    this.handle = await this.transport.consume(
      { queue: this.queue, bindings: [...new Set(bindings.types)], prefetch: 1_000, retryDelaysMs: [], exclusive: true, ...(this.options.onResubscribed ? { onResubscribed: this.options.onResubscribed } : {}) },
      (delivery) => {
        let event: Envelope;
        try {
          event = parseEnvelope(delivery.body);
        } catch (error) {
          this.logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'event violates its contract; dropped');
          void delivery.deadLetter({ code: errorCode(error), message: errorMessage(error) });
          return;
        }
        void delivery.ack();
        this.dispatch(event, undefined);
      },
    );
    await previous?.close();
  }

  /** The log this hub follows, and the id its cursors carry; undefined without a log. */
  get source(): LogSource | undefined {
    const log = this.transport.log;
    return log ? { log, logId: `${this.transport.namespace}:${log.kind}` } : undefined;
  }

  /** Following the log: the offset of the last entry dispatched; a stream starting now has seen everything up to it. */
  get position(): number | undefined {
    return this.offset;
  }

  /**
   * Follow the log for these types. A re-bind closes the old follow before it opens the new one
   * after the last offset dispatched: the log keeps what comes meanwhile, so nothing is missed,
   * nothing comes twice and the order holds (two follows at once would interleave theirs).
   */
  private async followLog(log: EventLog, types: string[]): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
    // Where the log ends now is where this hub starts: the first cursor it can give.
    this.offset ??= (await log.stats()).last ?? -1;
    // Nothing seen in a log that was empty: from its beginning, i.e. what was appended since,
    // rather than after an offset (-1) the log never held.
    const from = this.offset < 0 ? 'beginning' : { after: this.offset };
    this.handle = await log.follow({ from, types }, (entry) => this.fromLog(entry));
  }

  private fromLog(entry: LogEntry): void {
    let event: Envelope;
    try {
      event = parseEnvelope(entry.body);
    } catch (error) {
      // The consumers that own it dead-letter it; the log keeps it as it was published.
      this.logger.warn({ code: errorCode(error), err: errorMessage(error), offset: entry.offset }, 'logged event violates its contract; skipped');
      this.offset = Math.max(this.offset ?? -1, entry.offset);
      return;
    }
    this.offset = Math.max(this.offset ?? -1, entry.offset);
    this.dispatch(event, entry.offset);
  }

  private dispatch(event: Envelope, offset: number | undefined): void {
    if (this.seen.has(event.id)) return;
    this.seen.add(event.id);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value!);
    // Even an event whose data is unreadable is shown to onEvent: the cache then drops the tenant's results.
    this.options.onEvent?.(event);
    const base = event.dataschema + SEP + event.tenantid + SEP;
    const heard: Set<Listener>[] = [];
    const tenantWide = this.listeners.get(base + SEP);
    if (tenantWide) heard.push(tenantWide);
    for (const path of this.bindings.paths.get(event.dataschema) ?? []) {
      const value = keyValue(valueAt(event.data, path));
      if (value === undefined) continue;
      const key = base + path.join('.') + SEP + value;
      this.remember(key, event);
      const listeners = this.listeners.get(key);
      if (listeners) heard.push(listeners);
    }
    // Checked only when someone listens: most events (every job's, on a busy gateway) have no one.
    if (heard.length === 0) return;
    if (contractOf(event.dataschema)?.safeParse(event.data).success === false) {
      this.logger.warn({ dataschema: event.dataschema, id: event.id }, 'event data violates its contract; no subscription hears it');
      return;
    }
    for (const listeners of heard) for (const listener of listeners) listener(event, offset);
  }

  private remember(key: string, event: Envelope): void {
    const known = this.recent.get(key);
    // Out-of-order delivery must not replace a later state with an earlier one.
    if (known && known.time > event.time) return;
    this.recent.delete(key);
    this.recent.set(key, event);
    if (this.recent.size > RECENT_LIMIT) this.recent.delete(this.recent.keys().next().value!);
  }

  /** The latest event of these versions this instance saw with `path` = `value` for the tenant, if recent. */
  latest(spec: Required<ListenSpec>): Envelope | undefined {
    let found: Envelope | undefined;
    for (const dataschema of spec.events) {
      const event = this.recent.get(dataschema + SEP + spec.tenantId + SEP + spec.index.path.join('.') + SEP + spec.index.value);
      if (event && (!found || event.time > found.time)) found = event;
    }
    return found;
  }

  /** Listen to events; returns the function that stops listening. */
  listen(spec: ListenSpec, listener: Listener): () => void {
    const keys = spec.events.map((dataschema) => dataschema + SEP + spec.tenantId + SEP + (spec.index ? spec.index.path.join('.') + SEP + spec.index.value : SEP));
    for (const key of keys) {
      let set = this.listeners.get(key);
      if (!set) this.listeners.set(key, (set = new Set()));
      set.add(listener);
    }
    return () => {
      for (const key of keys) {
        const set = this.listeners.get(key);
        if (!set) continue;
        set.delete(listener);
        if (set.size === 0) this.listeners.delete(key);
      }
    };
  }

  /** Distinct listened keys (metrics, tests). */
  get size(): number {
    return this.listeners.size;
  }

  /** Listeners registered, counted once per key they listen on (tests: that a stream has started listening). */
  get listenerCount(): number {
    let count = 0;
    for (const set of this.listeners.values()) count += set.size;
    return count;
  }

  async stop(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a);
  const y = new Set(b);
  return x.size === y.size && [...x].every((v) => y.has(v));
}
