/**
 * `rebuildViews`: a service's views rebuilt from the event log, blue-green, while the live ones
 * keep serving. The steps (each in its own file): a shadow schema of the same shape
 * (`shadow.ts`), the whole log folded into it (`replay.ts`, `fold.ts`), catch-up passes until
 * it is close to the log's end, then one transaction that folds the rest and swaps the tables
 * (`swap.ts`); the old tables are dropped after.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import type pg from 'pg';
import type { Database } from '../db/index.ts';
import { queryRows } from '../db/sql.ts';
import { CoreErrorCode, errorCode, errorMessage } from '../errors.ts';
import type { EventLog } from '../events/log.ts';
import type { NewEvent } from '../events/publish.ts';
import { ViewsErrorCode, viewsError } from './errors.ts';
import type { FoldScope } from './fold.ts';
import { replay, type Replay } from './replay.ts';
import { createShadow, dropShadow, inboxHasEventTime } from './shadow.ts';
import { swap } from './swap.ts';
import type { RebuildOptions, RebuildResult, ViewConsumer } from './types.ts';

/** A catch-up pass that folds fewer entries than this is close enough to the end to swap. */
const CLOSE_ENOUGH = 200;
/** At most this many catch-up passes (a log growing faster than the fold never gets close). */
const MAX_CATCH_UP_PASSES = 20;

/** The consumers a rebuild folds, checked against the declaration. */
function viewConsumers(options: RebuildOptions): ViewConsumer[] {
  const { views, consumers, service } = options;
  if (views.tables.length === 0 || views.consumers.length === 0) throw viewsError(ViewsErrorCode.VIEWS_NOT_DECLARED, `${service} declares no view tables or consumers to rebuild`);
  return views.consumers.map((name) => {
    const consumer = consumers.find((c) => c.name === name);
    if (!consumer) throw viewsError(ViewsErrorCode.VIEWS_NOT_DECLARED, `${service} declares view consumer "${name}" but defines no such consumer`);
    if (consumer.stagedHandler) throw viewsError(ViewsErrorCode.VIEWS_HANDLER_UNSUPPORTED, `${service}.${name} has a staged handler (slow outside work): it is no fold a rebuild can replay`);
    return consumer;
  });
}

/** The log, checked to be on, and its size for the progress display. */
async function checkedLog(options: RebuildOptions): Promise<{ log: EventLog; total: number; first: number }> {
  const { log, service } = options;
  if (!log) throw viewsError(ViewsErrorCode.VIEWS_LOG_OFF, `the event log is off: ${service}'s views cannot be rebuilt without the history (turn the log on; it keeps events from then on)`);
  const stats = await log.stats();
  const first = stats.first ?? 0;
  return { log, first, total: stats.last === undefined ? 0 : stats.last - first + 1 };
}

/**
 * The first read, from the log's very first offset: `{ after: -1 }` is refused with
 * `CURSOR_EXPIRED` exactly when retention has dropped offset 0 (a log's first kept offset says
 * less: a RabbitMQ stream spends offsets on records of its own). Then only with `acceptPartial`,
 * from what it keeps.
 */
async function replayAll(r: Replay, fork: () => EntityManager, options: RebuildOptions): Promise<{ last: number | undefined; partial: boolean }> {
  try {
    return { last: (await replay(r, fork, { after: -1 })).last, partial: false };
  } catch (error) {
    if (errorCode(error) !== CoreErrorCode.CURSOR_EXPIRED) throw error;
    if (!options.acceptPartial) {
      throw viewsError(
        ViewsErrorCode.VIEWS_PARTIAL_HISTORY,
        `the log no longer keeps its oldest events (retention): rebuilt views would cover only what it keeps and lose the rest. Keep the current views, or accept that (--accept-partial)`,
        error,
      );
    }
    return { last: (await replay(r, fork, 'beginning')).last, partial: true };
  }
}

/**
 * One rebuild at a time per service database: a session advisory lock on a connection of our own
 * (PostgreSQL; an embedded database has one process, which runs one rebuild). Resolves with its release.
 */
async function exclusive(db: Database, service: string): Promise<() => Promise<void>> {
  if (db.target.kind !== 'postgres') return async () => {};
  const client: pg.Client = await db.connect();
  const key = `tributary views:rebuild ${service}`;
  const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock(hashtext($1)) as locked', [key]);
  if (!rows[0]?.locked) {
    await client.end();
    throw viewsError(ViewsErrorCode.VIEWS_REBUILD_RUNNING, `another views:rebuild of ${service} is running`);
  }
  return async () => {
    await client.end().catch(() => {});
  };
}

/**
 * Rebuild `options.views` of a service from the log, without stopping it: its live consumer goes
 * on writing the live tables and its resolvers reading them until the swap, which blocks writes
 * for the final catch-up and reads only for the rename. On any error or abort before the swap
 * commits, the live tables are as they were and the shadow schema is dropped; a rerun starts over.
 *
 * @throws TributaryError with a {@link ViewsErrorCode}.
 */
export async function rebuildViews(options: RebuildOptions): Promise<RebuildResult> {
  const consumers = viewConsumers(options);
  const { log, total, first } = await checkedLog(options);
  const { db, service, views, signal } = options;
  const release = await exclusive(db, service);
  // On the database's clock, as the inbox's processed_at. The swap checks that every event the
  // live consumer recorded from here on is folded; one it recorded before is in the log at the
  // first read, which begins after this (unless the log no longer keeps it: acceptPartial).
  const [{ now: started } = { now: new Date() }] = await queryRows<{ now: Date }>(db.fork(), 'select now() as now');
  const counts = { applied: 0, skipped: 0, announcementsDropped: 0 };
  const announced = new Map<string, NewEvent>();
  const logger = options.logger.child({ component: 'views-rebuild', service });
  try {
    await createShadow(db.fork(), views.tables);
    const eventTime = await inboxHasEventTime(db.fork());
    const folds: FoldScope[] = consumers.map((consumer) => ({
      consumer,
      consumerKey: `${service}.${consumer.name}`,
      logger,
      announcements: new Set(views.announcements ?? []),
      announced,
      eventTime,
      counts,
    }));
    let phase: 'replay' | 'catch-up' | 'swap' = 'replay';
    let latest = total;
    const r: Replay = {
      log,
      folds,
      batchSize: options.batchSize ?? 500,
      signal,
      onOffset: (offset) => {
        const done = offset - first + 1;
        if (done > latest) latest = done;
        options.onProgress?.({ phase, done, total: latest });
      },
    };
    const fork = () => db.fork();
    let { last, partial } = await replayAll(r, fork, options);
    phase = 'catch-up';
    for (let pass = 0; pass < MAX_CATCH_UP_PASSES && !signal?.aborted; pass++) {
      const step = await replay(r, fork, last === undefined ? 'beginning' : { after: last });
      last = step.last;
      if (step.entries < CLOSE_ENOUGH) break;
    }
    if (signal?.aborted) throw viewsError(ViewsErrorCode.VIEWS_REBUILD_ABORTED, `the rebuild of ${service} was interrupted before its swap: the live views are untouched`);
    phase = 'swap';
    // Once begun, the swap runs to its commit or rollback: an interrupt now would only cut its
    // final read short, and waiting for it is short.
    const target = { service, tables: views.tables, consumerKeys: folds.map((f) => f.consumerKey), after: last, since: started, announced };
    last = await swap(db, { ...r, signal: undefined }, target);
    options.onProgress?.({ phase: 'done', done: latest, total: latest });
    logger.info({ ...counts, lastOffset: last }, 'views rebuilt and swapped');
    // The swap committed: a failure to drop what is left is only a warning (the next run drops it).
    await dropShadow(db.fork()).catch((dropError) => logger.warn({ err: errorMessage(dropError) }, 'rebuild: swapped, but could not drop the old tables (the next run drops them)'));
    return { ...counts, announced: announced.size, lastOffset: last, partial };
  } catch (error) {
    await dropShadow(db.fork()).catch((dropError) => logger.warn({ err: errorMessage(dropError) }, 'rebuild: could not drop the shadow schema (the next run drops it)'));
    throw error;
  } finally {
    await release();
  }
}
