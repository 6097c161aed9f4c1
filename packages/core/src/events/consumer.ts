import { parse, type EventType, type ParsedEvent } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from 'pino';
import { contextFromTraceparent, parentFromTraceparent, runInContext } from '../context.ts';
import { countByType, metrics, watchConsumer } from '../metrics.ts';
import { SpanKind, withSpan } from '../tracing.ts';
import type { Database } from '../db/index.ts';
import { queryRows, valuesPlaceholders } from '../db/sql.ts';
import { errorCode, errorMessage, isUnrecoverable } from '../errors.ts';
import { publish, type NewEvent } from './publish.ts';
import { Headers, queueName, type ConsumerHandle, type Delivery, type Transport } from './transport.ts';

/** A transaction a handler works in: its EntityManager and a publish bound to it. */
export interface TransactionContext {
  /** The transaction's EntityManager. */
  em: EntityManager;
  /** Publish follow-up events through the outbox, in the same transaction. */
  publish(events: readonly NewEvent[]): Promise<void>;
}

/** What a handler gets besides the event: the transaction that also records the event in the inbox. */
export interface HandlerContext extends TransactionContext {
  log: Logger;
  /** 1 on the first attempt. */
  attempt: number;
  /** Whether this is the last attempt before the event is dead-lettered. */
  lastAttempt: boolean;
  /**
   * Runs `callback` once the transaction has ended, told whether it committed: what the handler
   * set up for after the commit (e.g. work it claimed in the transaction, to start) is started
   * or handed back there, never before the rows it rests on are visible. It must not throw.
   */
  afterTransaction(callback: (committed: boolean) => void): void;
}

export type EventHandler = (event: ParsedEvent, context: HandlerContext) => Promise<void>;
/**
 * Applies several events at once (e.g. one multi-row statement for a view). Events are new to
 * this consumer (duplicates already removed) and in delivery order; `attempt` in the context is
 * the highest of theirs. If it throws, each event is retried alone through the same function.
 */
export type BatchEventHandler = (events: ParsedEvent[], context: HandlerContext) => Promise<void>;

/** What a staged handler gets: short transactions of its own instead of one around it. */
export interface StagedHandlerContext {
  /** A short transaction that does not record the event (e.g. claim the work). */
  transaction<T>(work: (tx: TransactionContext) => Promise<T>): Promise<T>;
  /**
   * The transaction that finishes the event: it records the event in the inbox, then runs
   * `work`. `work` returning false rolls both back (the effect is not this delivery's to commit,
   * e.g. its lease was lost). `'duplicate'`: another delivery of the event settled first, and
   * `work` did not run.
   */
  settle(work: (tx: TransactionContext) => Promise<boolean>): Promise<'settled' | 'declined' | 'duplicate'>;
  log: Logger;
  /** 1 on the first attempt. */
  attempt: number;
  /** Whether this is the last attempt before the event is dead-lettered. */
  lastAttempt: boolean;
}

/**
 * Handles one event whose work is too long to hold a transaction (a model call): it runs with
 * no transaction open and commits its effects itself through the context. It also sees an event
 * redelivered after it settled (its ack was lost): its first transaction should find the work
 * done and return, as `settle` would answer `'duplicate'` anyway. Returning
 * `{ retryInMs }` hands the delivery back for later without counting an attempt (the work is
 * someone else's for now, e.g. under a live lease); the delivery stays unacked meanwhile, so
 * a crash loses nothing. A throw goes through the retry tiers as with the other handlers.
 */
export type StagedEventHandler = (event: ParsedEvent, context: StagedHandlerContext) => Promise<void | { retryInMs: number }>;

/**
 * The consumer's handler: exactly one of `handler`, `batchHandler` and `stagedHandler`, which
 * the compiler checks (the others are `never`).
 */
export type EventConsumerHandler =
  | {
      /** Applies one event. */
      handler: EventHandler;
      batchHandler?: never;
      stagedHandler?: never;
    }
  | {
      /** Applies a batch of events in one call. */
      batchHandler: BatchEventHandler;
      handler?: never;
      stagedHandler?: never;
    }
  | {
      /** Handles one event outside any transaction (long work). */
      stagedHandler: StagedEventHandler;
      handler?: never;
      batchHandler?: never;
    };

/** What a consumer is made of besides its handler. */
export interface EventConsumerSettings {
  /** The owning service (queue `<ns>.<service>.<name>`, event `source`). */
  service: string;
  /** The consumer's name within the service. */
  name: string;
  /** Event types this consumer receives. */
  types: readonly EventType[];
  db: Database;
  transport: Transport;
  logger: Logger;
  /** Unacked deliveries held at once. Default {@link DEFAULT_PREFETCH} (200). */
  prefetch?: number;
  /** Events applied in one transaction when several are waiting. Default {@link DEFAULT_MAX_BATCH} (50; a staged handler: 1). */
  maxBatch?: number;
  /** Transactions (a staged handler: events) in flight at once. Default {@link DEFAULT_CONCURRENCY} (4). */
  concurrency?: number;
  /** Attempts before dead-lettering (the first delivery counts). Default 5. */
  maxAttempts?: number;
  /** Retry tier delays; attempt n waits tier n-1 (the last tier repeats). Default 1 s, 5 s, 30 s, 2 min. */
  retryDelaysMs?: readonly number[];
  /** One consumer only, queue removed with the connection (gateway instances). */
  exclusive?: boolean;
  /** Called after each batch commits, with how many events took effect (metrics, tests). */
  onApplied?: (count: number) => void;
  /**
   * Whether an event can have an effect here, asked before any transaction. An event it answers
   * false for is acked with no transaction and no inbox row (counted as `irrelevant`): a
   * transaction per event the handler would only return from costs as much as a real one.
   * It may read (through `em`, no transaction) but must not write, and must answer false only
   * where the handler would do nothing: a row it reads may change the moment after, just as it
   * could between the delivery and the handler's own read.
   */
  relevant?: (event: ParsedEvent, em: EntityManager) => boolean | Promise<boolean>;
}

/** A consumer's settings and its one handler. */
export type EventConsumerOptions = EventConsumerSettings & EventConsumerHandler;

/** {@link EventConsumerOptions.prefetch}'s default: unacked deliveries a consumer holds at once. */
export const DEFAULT_PREFETCH = 200;
/** {@link EventConsumerOptions.maxBatch}'s default for handlers and batch handlers. */
export const DEFAULT_MAX_BATCH = 50;
/** {@link EventConsumerOptions.concurrency}'s default. */
export const DEFAULT_CONCURRENCY = 4;

/** Thrown inside a staged handler's settling transaction to roll it back when its work declines. */
const DECLINED = new Error('the settling work declined; rolled back');

/** How long deliveries may wait for a fuller batch while other transactions are in flight. */
const GATHER_MS = 10;

interface Item {
  delivery: Delivery;
  event: ParsedEvent;
}

/**
 * The consumer base: every delivery is parsed by its contract (a violation goes to the DLQ at
 * once), then applied in a transaction that also inserts (consumer, event id) into the inbox;
 * only after the commit is it acked. A duplicate, whether redelivered or delivered concurrently
 * to a second consumer, hits the inbox's unique key and is acked without a second effect.
 * Failures go through the retry tiers with growing delays, up to `maxAttempts`, then to the DLQ
 * with the error in its headers; an {@link UnrecoverableError} goes there at once.
 *
 * Deliveries waiting together are applied in one transaction (up to `maxBatch`). If that
 * transaction fails, each event is applied again on its own, so one poison event never
 * holds back the others.
 *
 * A {@link StagedEventHandler} gets no transaction around it: it opens short ones itself and
 * records the event in the inbox with its final one (`settle`), so long work between them
 * holds no database connection. It is acked after it returns.
 */
export class EventConsumer {
  readonly queue: string;
  readonly retryDelaysMs: readonly number[];
  private readonly prefetch: number;
  private readonly maxBatch: number;
  /** A batch worth a transaction of its own while others are in flight: maxBatch, or the prefetch's share. */
  private readonly fullBatch: number;
  /** Hold partial batches back while others are in flight (batch handlers, where batching pays). */
  private readonly gather: boolean;
  private pumpScheduled = false;
  private gatherTimer: NodeJS.Timeout | undefined;
  private readonly concurrency: number;
  private readonly maxAttempts: number;
  private readonly log: Logger;
  private readonly consumerKey: string;
  private handle: ConsumerHandle | undefined;
  private readonly waiting: Delivery[] = [];
  /** Batches being applied now (backlog metrics). */
  private readonly processing = new Set<Delivery[]>();
  private active = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private stopping = false;
  /** Deliveries a staged handler handed back for later, by their timers (unacked meanwhile). */
  private readonly deferred = new Map<NodeJS.Timeout, Delivery>();

  constructor(private readonly options: EventConsumerOptions) {
    this.queue = queueName(options.transport.namespace, options.service, options.name);
    this.consumerKey = `${options.service}.${options.name}`;
    this.prefetch = options.prefetch ?? DEFAULT_PREFETCH;
    this.maxBatch = options.stagedHandler ? 1 : (options.maxBatch ?? DEFAULT_MAX_BATCH);
    this.concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
    this.fullBatch = Math.max(1, Math.min(this.maxBatch, Math.floor(this.prefetch / this.concurrency)));
    this.gather = options.batchHandler !== undefined;
    this.maxAttempts = options.maxAttempts ?? 5;
    this.retryDelaysMs = options.retryDelaysMs ?? [1_000, 5_000, 30_000, 120_000];
    this.log = options.logger.child({ component: 'consumer', queue: this.queue });
  }

  async start(): Promise<void> {
    this.stopping = false;
    const spec = {
      queue: this.queue,
      bindings: this.options.types,
      prefetch: this.prefetch,
      retryDelaysMs: this.retryDelaysMs,
      ...(this.options.exclusive ? { exclusive: true } : {}),
    };
    // Stays watched after stop(): a stopped consumer's backlog is the one worth seeing.
    watchConsumer(this.options.service, this.options.name, () => this.backlog());
    this.handle = await this.options.transport.consume(spec, (delivery) => {
      this.waiting.push(delivery);
      if (!this.gather) return this.pump(true);
      // Deliveries come in bursts (one socket read holds many): gather the burst, then pump.
      if (this.pumpScheduled) return;
      this.pumpScheduled = true;
      setImmediate(() => {
        this.pumpScheduled = false;
        this.pump(false);
      });
    });
  }

  /**
   * Graceful stop: no new deliveries, finish the transactions in flight, and hand back what was
   * received but not started (the broker redelivers it to another consumer).
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    await this.handle?.cancel();
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
    this.waiting.length = 0;
    for (const timer of this.deferred.keys()) clearTimeout(timer);
    this.deferred.clear();
    await this.handle?.close();
    this.handle = undefined;
  }

  /**
   * The backlog as `/metrics` shows it: events ready in the queue plus those this consumer holds
   * unsettled, and the age of the oldest event it holds (the head of the queue, which is FIFO),
   * from the time its producer wrote it to the outbox.
   */
  async backlog(): Promise<{ depth: number; oldestAgeSeconds: number }> {
    if (!this.options.transport.isReady()) throw new Error(`${this.queue}: transport not ready`);
    const ready = await this.options.transport.queueDepth(this.queue);
    let held = this.waiting.length;
    let oldest = Number.POSITIVE_INFINITY;
    const visit = (delivery: Delivery) => {
      const time = delivery.headers[Headers.time];
      if (typeof time === 'number' && time < oldest) oldest = time;
    };
    this.waiting.forEach(visit);
    held += this.deferred.size;
    this.deferred.forEach(visit);
    for (const batch of this.processing) {
      held += batch.length;
      batch.forEach(visit);
    }
    return { depth: ready + held, oldestAgeSeconds: Number.isFinite(oldest) ? Math.max(0, (Date.now() - oldest) / 1000) : 0 };
  }

  /**
   * Start batches while a transaction slot is free. A per-event handler's consumer starts
   * whatever waits at once. A batch handler's consumer does too when nothing is in flight
   * (latency); while transactions are busy, it starts one with a full batch, or with what
   * gathered after {@link GATHER_MS} (`force`): under load a trickle of deliveries, or the rest
   * a full batch left behind, must not become a row of one-event transactions, each as dear as
   * a full one, and a slow handler must not hold the next events back for long either.
   */
  private pump(force: boolean): void {
    let partialOk = force;
    while (!this.stopping && this.active < this.concurrency && this.waiting.length > 0) {
      if (this.gather && this.active > 0 && !partialOk && this.waiting.length < this.fullBatch) {
        this.gatherTimer ??= setTimeout(() => {
          this.gatherTimer = undefined;
          this.pump(true);
        }, GATHER_MS);
        return;
      }
      partialOk = !this.gather;
      const batch = this.waiting.splice(0, this.maxBatch);
      this.active++;
      this.processing.add(batch);
      const work = this.processBatch(batch)
        .catch((error) => this.log.error({ err: errorMessage(error) }, 'batch settlement failed; the broker will redeliver'))
        .finally(() => {
          this.processing.delete(batch);
          this.active--;
          this.inFlight.delete(work);
          this.pump(!this.gather);
        });
      this.inFlight.add(work);
    }
  }

  private async processBatch(deliveries: Delivery[]): Promise<void> {
    const items: Item[] = [];
    for (const delivery of deliveries) {
      try {
        // A string, so the parser does not copy the buffer before decoding it.
        items.push({ delivery, event: parse(delivery.body.toString('utf8')) });
      } catch (error) {
        // The same bytes will never parse: no retry.
        this.log.warn({ messageId: delivery.messageId, code: errorCode(error), err: errorMessage(error) }, 'event violates its contract; dead-lettered');
        metrics.eventsDeadLettered.inc({ ...this.labels, type: delivery.routingKey, code: errorCode(error) });
        await delivery.deadLetter({ code: errorCode(error), message: errorMessage(error) });
      }
    }
    if (this.options.relevant && items.length > 0) {
      const kept: Item[] = [];
      for (const item of items) {
        let relevant: boolean;
        try {
          relevant = await this.options.relevant(item.event, this.options.db.fork());
        } catch (error) {
          await this.fail(item, error);
          continue;
        }
        if (relevant) {
          kept.push(item);
          continue;
        }
        metrics.eventsConsumed.inc({ ...this.labels, type: item.event.type, outcome: 'irrelevant' });
        await item.delivery.ack();
      }
      items.splice(0, items.length, ...kept);
    }
    if (items.length === 0) return;
    if (this.options.stagedHandler) {
      for (const item of items) await this.processStaged(item);
      return;
    }
    if (items.length === 1) return this.processOne(items[0]!);
    try {
      await this.apply(items);
    } catch {
      // Find the culprit: each event alone, in its own transaction.
      for (const item of items) await this.processOne(item);
      return;
    }
    await Promise.all(items.map((item) => item.delivery.ack()));
  }

  private async processOne(item: Item): Promise<void> {
    try {
      await this.apply([item]);
    } catch (error) {
      await this.fail(item, error);
      return;
    }
    await item.delivery.ack();
  }

  /** Through the retry tiers, or to the DLQ on the last attempt or an unrecoverable error. */
  private async fail({ delivery, event }: Item, error: unknown): Promise<void> {
    const failure = { code: errorCode(error), message: errorMessage(error) };
    const context = contextFromTraceparent(event.traceparent, event.tenantid);
    const dead = isUnrecoverable(error) || delivery.attempt >= this.maxAttempts;
    runInContext(context, () => {
      if (dead) this.log.error({ eventId: event.id, type: event.type, attempt: delivery.attempt, ...failure }, 'event handling failed; dead-lettered');
      else this.log.warn({ eventId: event.id, type: event.type, attempt: delivery.attempt, ...failure }, 'event handling failed; will retry');
    });
    if (dead) {
      metrics.eventsDeadLettered.inc({ ...this.labels, type: event.type, code: failure.code });
      await delivery.deadLetter(failure);
    } else {
      metrics.eventsRetried.inc({ ...this.labels, type: event.type });
      await delivery.retry(delivery.attempt - 1, failure);
    }
  }

  /**
   * A staged handler's event, handled with no transaction open; acked once the handler returns,
   * handed back later if it asks, failed as {@link processOne} does if it throws. No inbox
   * lookup first (a statement per event on the hot path): the handler's own first transaction
   * finds work a redelivered event already did, and `settle` refuses a second effect.
   */
  private async processStaged(item: Item): Promise<void> {
    const { delivery, event } = item;
    const { db, service } = this.options;
    const transactionContext = (em: EntityManager): TransactionContext => ({ em, publish: (events) => publish(em, service, events).then(() => undefined) });
    let outcome: 'settled' | 'declined' | 'duplicate' | undefined;
    const context: StagedHandlerContext = {
      transaction: (work) => db.fork().transactional((tx) => work(transactionContext(tx))),
      settle: async (work) => {
        outcome = await db
          .fork()
          .transactional(async (tx) => {
            const inserted = await queryRows(tx, 'insert into tributary_inbox (consumer, event_id, type) values (?, ?, ?) on conflict do nothing returning event_id', [
              this.consumerKey,
              event.id,
              event.type,
            ]);
            if (inserted.length === 0) return 'duplicate' as const;
            if (!(await work(transactionContext(tx)))) throw DECLINED;
            return 'settled' as const;
          })
          .catch((error: unknown) => {
            if (error === DECLINED) return 'declined' as const;
            throw error;
          });
        return outcome;
      },
      log: this.log,
      attempt: delivery.attempt,
      lastAttempt: delivery.attempt >= this.maxAttempts,
    };
    let later: void | { retryInMs: number };
    try {
      later = await withSpan(`${this.queue} process`, SpanKind.CONSUMER, this.parentOf(event), this.spanAttributes(event), () => this.options.stagedHandler!(event, context));
    } catch (error) {
      await this.fail(item, error);
      return;
    }
    if (later) {
      this.defer(delivery, later.retryInMs);
      return;
    }
    if (outcome) metrics.eventsConsumed.inc({ ...this.labels, type: event.type, outcome: outcome === 'settled' ? 'applied' : 'duplicate' });
    if (outcome === 'settled') this.options.onApplied?.(1);
    await delivery.ack();
  }

  /** Hand a delivery back to the queue of waiting ones after `ms`, still unacked. */
  private defer(delivery: Delivery, ms: number): void {
    const timer = setTimeout(() => {
      this.deferred.delete(timer);
      if (this.stopping) return;
      this.waiting.unshift(delivery);
      this.pump(true);
    }, Math.max(0, ms));
    this.deferred.set(timer, delivery);
  }

  /** One transaction: inbox rows for all, then the handler for those not seen before. */
  private async apply(items: Item[]): Promise<void> {
    const em = this.options.db.fork();
    let applied: Item[] = [];
    let duplicates: Item[] = [];
    const ended: ((committed: boolean) => void)[] = [];
    const transaction = em.transactional(async (tx) => {
      const params: string[] = [];
      for (const i of items) params.push(this.consumerKey, i.event.id, i.event.type);
      const inserted = await queryRows<{ event_id: string }>(
        tx,
        `insert into tributary_inbox (consumer, event_id, type) values ${valuesPlaceholders(items.length, 3)} on conflict do nothing returning event_id`,
        params,
      );
      const fresh = new Set(inserted.map((r) => r.event_id));
      // The same event twice in one batch: the first copy wins, the second is a duplicate.
      const todo: Item[] = [];
      const dup: Item[] = [];
      for (const item of items) (fresh.delete(item.event.id) ? todo : dup).push(item);
      duplicates = dup;
      applied = todo;
      if (todo.length === 0) return;
      const first = todo[0]!;
      const attempt = Math.max(...todo.map((i) => i.delivery.attempt));
      const handlerContext = {
        em: tx,
        publish: async (events: readonly NewEvent[]) => {
          await publish(tx, this.options.service, events);
        },
        log: this.log,
        attempt,
        lastAttempt: attempt >= this.maxAttempts,
        afterTransaction: (callback: (committed: boolean) => void) => void ended.push(callback),
      };
      const { handler, batchHandler } = this.options;
      if (batchHandler) {
        // One span for the batch, under the first event's (a batch has no single parent).
        await withSpan(`${this.queue} process`, SpanKind.CONSUMER, this.parentOf(first.event), { ...this.spanAttributes(first.event), 'messaging.batch.message_count': todo.length }, () =>
          batchHandler(todo.map((i) => i.event), handlerContext),
        );
      } else {
        for (const item of todo) {
          await withSpan(`${this.queue} process`, SpanKind.CONSUMER, this.parentOf(item.event), this.spanAttributes(item.event), () =>
            handler!(item.event, { ...handlerContext, attempt: item.delivery.attempt, lastAttempt: item.delivery.attempt >= this.maxAttempts }),
          );
        }
      }
      await tx.flush();
    });
    const outcome = await transaction.then(
      () => ({ committed: true as const }),
      (error: unknown) => ({ committed: false as const, error }),
    );
    for (const callback of ended) callback(outcome.committed);
    if (!outcome.committed) throw outcome.error;
    countByType(metrics.eventsConsumed, applied.map((i) => i.event.type), (type) => ({ ...this.labels, type, outcome: 'applied' }));
    countByType(metrics.eventsConsumed, duplicates.map((i) => i.event.type), (type) => ({ ...this.labels, type, outcome: 'duplicate' }));
    if (applied.length > 0) this.options.onApplied?.(applied.length);
  }

  private get labels() {
    return { service: this.options.service, consumer: this.options.name };
  }

  /** The span an event's handling hangs under: the producer span named by its traceparent. */
  private parentOf(event: ParsedEvent) {
    return parentFromTraceparent(event.traceparent, event.tenantid);
  }

  private spanAttributes(event: ParsedEvent) {
    return { 'messaging.system': 'rabbitmq', 'messaging.destination.name': this.queue, 'messaging.message.id': event.id, 'tributary.event.type': event.type, 'tributary.service': this.options.service };
  }
}
