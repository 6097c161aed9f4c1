/**
 * The swap: one transaction that brings the shadow views to the log's end and puts them in the
 * live tables' place. Lock order matters (see {@link swap}); every step before the rename lets
 * readers through.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Database } from '../db/index.ts';
import { queryRows, queryRun } from '../db/sql.ts';
import { publish, type NewEvent } from '../events/publish.ts';
import { ViewsErrorCode, viewsError } from './errors.ts';
import { replay, type Replay } from './replay.ts';
import { INBOX, OLD_SCHEMA, quoteIdent, SHADOW_SCHEMA } from './shadow.ts';

/** How long the swap waits for the log to hand out an event the live consumer already applied. */
const COMPLETE_WAIT_MS = 10_000;
const COMPLETE_POLL_MS = 100;

const live = (table: string) => `public.${quoteIdent(table)}`;

/**
 * An event the live consumer recorded (since `since`) that the shadow inbox lacks: a publish the
 * live queue delivered before the log made it readable (a RabbitMQ stream and a queue are
 * written side by side). Swapping then would lose it: the live inbox says applied, the new
 * tables never saw it.
 */
async function missingFromShadow(tx: EntityManager, consumerKeys: readonly string[], since: Date): Promise<string | undefined> {
  const rows = await queryRows<{ event_id: string }>(
    tx,
    `select l.event_id from public.${INBOX} l
     where l.consumer = any(?) and l.processed_at >= ?
       and not exists (select 1 from ${quoteIdent(SHADOW_SCHEMA)}.${INBOX} s where s.consumer = l.consumer and s.event_id = l.event_id)
     limit 1`,
    [[...consumerKeys], since],
  );
  return rows[0]?.event_id;
}

/** What the swap replaces and announces. */
export interface SwapTarget {
  service: string;
  tables: readonly string[];
  /** The live consumers' inbox keys. */
  consumerKeys: readonly string[];
  /** The last offset folded before the swap. */
  after: number | undefined;
  /** When the rebuild began (database clock): the live inbox rows checked from here on. */
  since: Date;
  /** The last announcement of each entity (see `FoldScope.announced`). */
  announced: ReadonlyMap<string, NewEvent>;
}

/**
 * The shadow inbox rows the live one lacks, copied into it. With inbox retention (core migration
 * 0003: `event_time` and the watermark), only those from the consumer's watermark on: the prune
 * would delete older ones again within minutes, and on a long history they are nearly all of them
 * (the live inbox keeps a week), written while the live consumer waits.
 */
async function copyInbox(tx: EntityManager, eventTime: boolean): Promise<void> {
  const sinceWatermark = eventTime
    ? `and s.event_time >= coalesce((select w.pruned_before from public.tributary_inbox_watermark w where w.consumer = s.consumer), '-infinity'::timestamptz)`
    : '';
  await queryRun(
    tx,
    `insert into public.${INBOX} select s.* from ${quoteIdent(SHADOW_SCHEMA)}.${INBOX} s
     where not exists (select 1 from public.${INBOX} l where l.consumer = s.consumer and l.event_id = s.event_id) ${sinceWatermark}
     on conflict do nothing`,
  );
}

/**
 * In one transaction:
 * 1. `lock table public.tributary_inbox in exclusive mode`: the live consumer's next
 *    transaction waits at its first statement (the inbox insert), and those in flight finish
 *    first. Taken before the views' locks, so a live transaction that inserted its inbox rows
 *    can never wait on us while we wait on it. Reads go on.
 * 2. `lock table <views> in exclusive mode`: nothing writes them now; reads go on.
 * 3. Read the log to its end and fold the rest (savepoints inside this transaction), until every
 *    event the live consumer recorded since the rebuild began is in the shadow inbox.
 * 4. Copy the shadow inbox rows the live inbox lacks into it, under the live consumer's key, so
 *    a delivery still queued for the live consumer is not folded into the new tables twice
 *    ({@link copyInbox}).
 * 5. `access exclusive` on the views (reads wait from here to the commit: an instant), move the
 *    live tables to `tributary_rebuild_old` and the shadow ones to `public`. Indexes,
 *    constraints and owned sequences move with their table.
 * 6. Publish (outbox) the last announcement of each entity the replay announced: the rebuilt state.
 * Resolves with the last offset folded.
 */
export async function swap(db: Database, r: Replay, target: SwapTarget): Promise<number | undefined> {
  const { tables, consumerKeys, since } = target;
  const eventTime = r.folds.some((f) => f.eventTime);
  return db.fork().transactional(async (tx) => {
    // The folds' `set local search_path` lasts to the commit: kept to restore for the outbox.
    const [{ path } = { path: 'public' }] = await queryRows<{ path: string }>(tx, `select current_setting('search_path') as path`);
    await queryRun(tx, `lock table public.${INBOX} in exclusive mode`);
    await queryRun(tx, `lock table ${tables.map(live).join(', ')} in exclusive mode`);
    const em = () => tx;
    let last = target.after;
    const deadline = Date.now() + COMPLETE_WAIT_MS;
    for (;;) {
      last = (await replay(r, em, last === undefined ? 'beginning' : { after: last })).last;
      const missing = await missingFromShadow(tx, consumerKeys, since);
      if (missing === undefined) break;
      if (Date.now() > deadline) {
        throw viewsError(ViewsErrorCode.VIEWS_SWAP_INCOMPLETE, `the live consumer applied event ${missing}, which the log has not handed out after ${COMPLETE_WAIT_MS} ms: not swapped (rerun)`);
      }
      await new Promise((resolve) => setTimeout(resolve, COMPLETE_POLL_MS));
    }
    await copyInbox(tx, eventTime);
    await queryRun(tx, `lock table ${tables.map(live).join(', ')} in access exclusive mode`);
    await queryRun(tx, `create schema ${quoteIdent(OLD_SCHEMA)}`);
    for (const table of tables) {
      await queryRun(tx, `alter table ${live(table)} set schema ${quoteIdent(OLD_SCHEMA)}`);
      await queryRun(tx, `alter table ${quoteIdent(SHADOW_SCHEMA)}.${quoteIdent(table)} set schema public`);
    }
    await queryRows(tx, `select set_config('search_path', ?, true)`, [path]);
    await publish(tx, target.service, [...target.announced.values()]);
    return last;
  });
}
