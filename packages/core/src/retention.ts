import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Database } from './db/index.ts';
import { queryRows } from './db/sql.ts';
import { errorMessage } from './errors.ts';
import { DEFAULT_INBOX_RETENTION_HOURS, pruneInbox } from './events/inbox-retention.ts';
import { DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS, pruneIdempotencyKeys } from './idempotency.ts';
import { CORE_EVENT_TABLES, rowsPruned, watchTableRows } from './metrics-tables.ts';

/** How often a service process prunes its per-event tables, ms. */
export const DEFAULT_PRUNE_INTERVAL_MS = 10 * 60_000;
const FIRST_ROUND_MAX_DELAY_MS = 5_000;
/** How long the relay keeps an outbox row after the broker confirmed it, minutes (`OUTBOX_RETENTION_MINUTES`). */
export const DEFAULT_OUTBOX_RETENTION_MINUTES = 60;

/**
 * The retention settings every subgraph service has (spread into `subgraphConfigSchema`). The
 * idempotency keys' `IDEMPOTENCY_KEY_TTL_HOURS` is there already: the mutations read it too.
 */
export const retentionSettings = {
  /** How long a consumer's inbox rows are kept, hours (1..8760). Default 168 (7 days). */
  INBOX_RETENTION_HOURS: z.coerce.number().int().min(1).max(8760).default(DEFAULT_INBOX_RETENTION_HOURS),
  /**
   * How long the outbox keeps a row the broker confirmed, minutes (0..10080); 0 deletes each row in
   * the transaction that publishes it. Default 60. Nothing reads a sent row: it is kept only to look
   * at what went out recently.
   */
  OUTBOX_RETENTION_MINUTES: z.coerce.number().int().min(0).max(10_080).default(DEFAULT_OUTBOX_RETENTION_MINUTES),
};

/** One table's prune: deletes what is past its retention and says how many rows went. */
export interface PruneTask {
  /** The table (the metrics' label). */
  table: string;
  prune(): Promise<number>;
}

/**
 * The consumers with rows in the inbox, found by skipping along the (consumer, event_time) index
 * (one probe per consumer, however many rows each has): also those no longer in the code, whose
 * rows would otherwise stay forever.
 */
export async function inboxConsumers(em: EntityManager): Promise<string[]> {
  const rows = await queryRows<{ consumer: string }>(
    em,
    `with recursive c (consumer) as (
       (select consumer from tributary_inbox order by consumer limit 1)
       union all
       select (select i.consumer from tributary_inbox i where i.consumer > c.consumer order by i.consumer limit 1) from c where c.consumer is not null
     ) select consumer from c where consumer is not null`,
  );
  return rows.map((r) => r.consumer);
}

/** The inbox of every consumer in the database, as one task. */
export function inboxPruneTask(db: Database, retentionMs: number): PruneTask {
  return {
    table: 'tributary_inbox',
    prune: async () => {
      let deleted = 0;
      for (const consumer of await inboxConsumers(db.fork())) deleted += (await pruneInbox(db, consumer, retentionMs)).deleted;
      return deleted;
    },
  };
}

export interface PrunerOptions {
  /** The service (logs and metrics). */
  service: string;
  logger: Logger;
  tasks: readonly PruneTask[];
  /** Default {@link DEFAULT_PRUNE_INTERVAL_MS}. */
  intervalMs?: number;
}

/**
 * Runs prune tasks now and then: one round at a time, each task after the other, a failure
 * logged and the next task run anyway (a prune is retried next round; nothing depends on it
 * having run). Its timer is unref'd: it never keeps a process alive. A {@link ServiceWorker}
 * shape, so a service can run one for its own tables (`workers`).
 */
export class Pruner {
  private timer: NodeJS.Timeout | undefined;
  private first: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private readonly intervalMs: number;

  constructor(private readonly options: PrunerOptions) {
    this.intervalMs = options.intervalMs ?? DEFAULT_PRUNE_INTERVAL_MS;
    if (!Number.isFinite(this.intervalMs) || this.intervalMs < 1) throw new RangeError(`intervalMs must be at least 1, got ${this.intervalMs}`);
  }

  async start(): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => void this.runOnce(), this.intervalMs);
    this.timer.unref();
    // The first round soon after the start: a process restarted more often than the interval still prunes.
    this.first = setTimeout(() => void this.runOnce(), Math.min(this.intervalMs, FIRST_ROUND_MAX_DELAY_MS));
    this.first.unref();
  }

  /** One round now (or the one in flight). Never throws. */
  runOnce(): Promise<void> {
    this.round ??= this.pruneAll().finally(() => (this.round = undefined));
    return this.round;
  }

  /** No further rounds; resolves once the one in flight has ended, so the database can close. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.first);
    this.timer = undefined;
    await this.round;
  }

  private async pruneAll(): Promise<void> {
    const { service, logger } = this.options;
    for (const task of this.options.tasks) {
      try {
        const deleted = await task.prune();
        if (deleted > 0) {
          rowsPruned.inc({ service, table: task.table }, deleted);
          logger.debug({ table: task.table, deleted }, 'pruned rows past their retention');
        }
      } catch (error) {
        logger.warn({ err: errorMessage(error), table: task.table }, 'prune failed; retried next round');
      }
    }
  }
}

/**
 * A service's own per-event tables (e.g. webhook deliveries), pruned by `tasks` and their row
 * counts on `/metrics`, as a worker (`ServiceDefinition.workers`): started once the service
 * listens, stopped before it.
 */
export function retentionWorker(options: PrunerOptions & { db: Database }): { start(): Promise<void>; stop(): Promise<void> } {
  const pruner = new Pruner(options);
  let unwatch: (() => void) | undefined;
  return {
    start: async () => {
      unwatch ??= watchTableRows(options.service, options.db, options.tasks.map((t) => t.table));
      await pruner.start();
    },
    stop: async () => {
      unwatch?.();
      unwatch = undefined;
      await pruner.stop();
    },
  };
}

export { watchTableRows } from './metrics-tables.ts';

export interface PruningOptions {
  service: string;
  /** The service's database: its tables' row counts are read from it on every scrape. */
  db: Database;
  /** The connections the prunes run on (the relay's own pool on PostgreSQL, off the requests' pool). */
  pruneDb: Database;
  logger: Logger;
  config: { INBOX_RETENTION_HOURS?: number; IDEMPOTENCY_KEY_TTL_HOURS?: number };
  intervalMs?: number;
}

/**
 * A service process's retention: every {@link PruningOptions.intervalMs} its inbox (every consumer's
 * rows past `INBOX_RETENTION_HOURS`, watermarks raised) and its idempotency keys past their TTL are
 * deleted; the outbox's sent rows are the relay's to prune. The per-event tables' row counts go on
 * `/metrics` (`tributary_table_rows`). Returns the function that stops both, awaiting a round in flight.
 */
export function startPruning(options: PruningOptions): () => Promise<void> {
  const { db, pruneDb, config } = options;
  const inboxHours = config.INBOX_RETENTION_HOURS ?? DEFAULT_INBOX_RETENTION_HOURS;
  const keyHours = config.IDEMPOTENCY_KEY_TTL_HOURS ?? DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS;
  const pruner = new Pruner({
    service: options.service,
    logger: options.logger,
    ...(options.intervalMs !== undefined ? { intervalMs: options.intervalMs } : {}),
    tasks: [
      inboxPruneTask(pruneDb, inboxHours * 3_600_000),
      // Keys past their TTL already count as gone (idempotent() takes such a row over); this keeps the table small.
      { table: 'tributary_idempotency', prune: () => pruneIdempotencyKeys(pruneDb.fork(), keyHours) },
    ],
  });
  void pruner.start();
  const unwatch = watchTableRows(options.service, db, CORE_EVENT_TABLES);
  return async () => {
    unwatch();
    await pruner.stop();
  };
}
