import type { EventType, ParsedEvent } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from 'pino';
import type { Database } from '../db/index.ts';
import type { NewEvent } from './publish.ts';
import type { Transport } from './transport.ts';

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
  /**
   * A late joiner: the first time this consumer (service + name) starts, it applies the event
   * log's history of its `types` first, from the log's beginning or from the first entry stored
   * at or after a time, then continues live, with no gap and nothing applied twice (the queue is
   * bound before the history is read and holds what arrives meanwhile; the inbox drops the
   * overlap). Its progress is checkpointed with each batch, so a restart resumes where it
   * stopped; once caught up, later starts skip the history. Needs the transport's log
   * (`EVENT_LOG_DISABLED` otherwise) and a `handler` or `batchHandler` (a staged handler:
   * `HISTORY_UNSUPPORTED`). Default: none (the consumer sees only what is published once its
   * queue exists).
   */
  startFrom?: 'beginning' | Date;
}

/** A consumer's settings and its one handler. */
export type EventConsumerOptions = EventConsumerSettings & EventConsumerHandler;

/** {@link EventConsumerOptions.prefetch}'s default: unacked deliveries a consumer holds at once. */
export const DEFAULT_PREFETCH = 200;
/** {@link EventConsumerOptions.maxBatch}'s default for handlers and batch handlers. */
export const DEFAULT_MAX_BATCH = 50;
/** {@link EventConsumerOptions.concurrency}'s default. */
export const DEFAULT_CONCURRENCY = 4;
