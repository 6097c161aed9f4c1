import type { EntityManager } from '@mikro-orm/postgresql';
import type { Database } from '../db/index.ts';
import { queryRows, queryRun } from '../db/sql.ts';
import { TributaryError } from '../errors.ts';

/**
 * How long a consumer's inbox rows are kept, hours (`INBOX_RETENTION_HOURS`). Default 7 days.
 *
 * A row only has to outlive the redeliveries of an event that was applied: a lost ack, the
 * broker's redelivery after a crash, the relay publishing a row again after a crash before its
 * mark-sent; all of these come within minutes (the retry tiers end at 120 s). An event replayed
 * from a dead-letter queue days later failed, so it has no row to find. A week is far past any of
 * them and still bounds the table to a week of events per consumer.
 */
export const DEFAULT_INBOX_RETENTION_HOURS = 7 * 24;

export const InboxRetentionErrorCode = {
  /** {@link lockWatermark} called outside a transaction: its lock would end with the statement. */
  WATERMARK_NO_TRANSACTION: 'WATERMARK_NO_TRANSACTION',
} as const;

/** The first key of the consumers' watermark locks (advisory, two-key form; the second is the consumer's hash). */
const LOCK_SPACE = 0x74_69_6e_77; // 'tinw'

/** Rows one prune statement deletes at most: short statements, no long lock on the inbox. */
export const INBOX_PRUNE_BATCH = 10_000;

/** What {@link pruneInbox} did. */
export interface InboxPruneResult {
  /** Rows deleted. */
  deleted: number;
  /** The consumer's watermark afterwards (it may be later than this prune's own cutoff). */
  watermark: Date;
}

function asDate(value: Date | string): Date {
  return value instanceof Date ? value : new Date(value);
}

/**
 * Delete a consumer's inbox rows whose event is older than `retentionMs` (by the event's own
 * `time`, on the database's clock), `batch` rows per statement, and raise its watermark to
 * now − retention (never lowered: two processes pruning at once keep the later one).
 *
 * The watermark is committed first, before any row goes: at every moment the rows that may be gone
 * are older than the watermark, which is what {@link replayWatermark}'s readers rely on. Each
 * batch then commits on its own, so a prune of a large backlog holds no long transaction and an
 * interrupted prune is simply finished by the next one.
 */
export async function pruneInbox(db: Database, consumerKey: string, retentionMs: number, batch = INBOX_PRUNE_BATCH): Promise<InboxPruneResult> {
  if (!Number.isFinite(retentionMs) || retentionMs < 0) throw new RangeError(`retentionMs must be a non-negative number, got ${retentionMs}`);
  if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`batch must be a positive integer, got ${batch}`);
  const watermark = await db.fork().transactional(async (tx) => {
    // Waits for replay transactions holding the consumer's lock (lockWatermark) to end; those that
    // start after this commits read the raised watermark.
    await queryRows(tx, `select pg_advisory_xact_lock(${LOCK_SPACE}, hashtext(?))`, [consumerKey]);
    const [mark] = await queryRows<{ pruned_before: Date | string }>(
      tx,
      `insert into tributary_inbox_watermark (consumer, pruned_before) values (?, now() - make_interval(secs => ?))
       on conflict (consumer) do update set pruned_before = greatest(tributary_inbox_watermark.pruned_before, excluded.pruned_before)
       returning pruned_before`,
      [consumerKey, retentionMs / 1000],
    );
    return asDate(mark!.pruned_before);
  });
  let deleted = 0;
  for (;;) {
    // ctid: delete exactly the rows the index found, without a second lookup by primary key.
    const n = await queryRun(
      db.fork(),
      `delete from tributary_inbox where ctid = any(array(
         select ctid from tributary_inbox where consumer = ? and event_time < ? limit ${batch}))`,
      [consumerKey, watermark],
    );
    deleted += n;
    if (n < batch) break;
  }
  return { deleted, watermark };
}

/**
 * The time before which a log replay must not apply a consumer's events: undefined when its inbox
 * was never pruned (the inbox alone de-duplicates). An event whose `time` is before the watermark
 * was either applied (and its inbox row may be gone) or is older than the retention; one at or after
 * it that was applied still has its row, so the inbox drops it.
 */
export async function replayWatermark(em: EntityManager, consumerKey: string): Promise<Date | undefined> {
  const [row] = await queryRows<{ pruned_before: Date | string }>(em, 'select pruned_before from tributary_inbox_watermark where consumer = ?', [consumerKey]);
  return row ? asDate(row.pruned_before) : undefined;
}

/**
 * {@link replayWatermark} for the transaction that applies replayed events, airtight against a
 * prune running meanwhile: call it in that transaction before choosing which events to apply. It
 * takes the consumer's lock shared, so a prune's watermark raise waits until this transaction
 * ends, and returns the watermark as it is once the lock is held. Without it, a watermark read
 * earlier may be stale: a prune could raise it and delete the inbox rows of events older than the
 * new one, which a replay still going by the old one would apply a second time.
 */
export async function lockWatermark(tx: EntityManager, consumerKey: string): Promise<Date | undefined> {
  if (!tx.getTransactionContext()) throw new TributaryError(InboxRetentionErrorCode.WATERMARK_NO_TRANSACTION, 'lockWatermark() must run inside the transaction that applies the replayed events');
  await queryRows(tx, `select pg_advisory_xact_lock_shared(${LOCK_SPACE}, hashtext(?))`, [consumerKey]);
  return replayWatermark(tx, consumerKey);
}

/** Whether a replayed event is before the consumer's watermark: skip it without applying it. */
export function beforeWatermark(eventTime: string | Date, watermark: Date | undefined): boolean {
  if (!watermark) return false;
  return asDate(eventTime).getTime() < watermark.getTime();
}
