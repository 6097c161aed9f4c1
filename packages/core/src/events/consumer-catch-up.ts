import type { EntityManager } from '@mikro-orm/postgresql';
import { errorCode, errorMessage } from '../errors.ts';
import { queryRows, queryRun } from '../db/sql.ts';
import { CoreErrorCode } from '../errors.ts';
import { applyHistory, type HistoryProgress } from './consumer-history.ts';
import type { ConsumerScope } from './consumer-scope.ts';
import { replayWatermark } from './inbox-retention.ts';
import type { EventLog, LogStart } from './log.ts';

/** Backoff between attempts at the history after a failure (database down, a failing event): doubling up to this. */
const MAX_RETRY_DELAY_MS = 30_000;

interface Checkpoint {
  lastOffset: number | undefined;
  done: boolean;
}

export async function readCheckpoint(em: EntityManager, consumerKey: string): Promise<Checkpoint | undefined> {
  const [row] = await queryRows<{ last_offset: string | number | null; done: boolean }>(em, 'select last_offset, done from tributary_log_checkpoint where consumer = ?', [consumerKey]);
  if (!row) return undefined;
  return { lastOffset: row.last_offset === null ? undefined : Number(row.last_offset), done: row.done };
}

/**
 * Never moves back, and once done stays done: two instances of a service starting together both
 * apply the history (the inbox drops what the other applied first), and the slower one's batch
 * must not send the checkpoint back, nor its end undo the other's `done`.
 */
export async function writeCheckpoint(em: EntityManager, consumerKey: string, lastOffset: number | undefined, done: boolean): Promise<void> {
  await queryRun(
    em,
    `insert into tributary_log_checkpoint (consumer, last_offset, done, updated_at) values (?, ?, ?, now())
     on conflict (consumer) do update set
       last_offset = greatest(excluded.last_offset, tributary_log_checkpoint.last_offset),
       done = excluded.done or tributary_log_checkpoint.done, updated_at = now()`,
    [consumerKey, lastOffset ?? null, done],
  );
}

/**
 * A late joiner's history, once: from its checkpoint if it has one (a previous start stopped
 * mid-way), else from `startFrom`; each batch commits with its checkpoint; at the end the
 * checkpoint is marked done. Resolves with the progress, or undefined when the history was done
 * before (nothing read). Stops early, with `done` unset, when `signal` aborts.
 */
export async function catchUpFromLog(scope: ConsumerScope, log: EventLog, startFrom: 'beginning' | Date, signal: AbortSignal): Promise<HistoryProgress | undefined> {
  const { consumerKey } = scope;
  const em = scope.options.db.fork();
  const checkpoint = await readCheckpoint(em, consumerKey);
  if (checkpoint?.done) return undefined;
  const initial: LogStart = startFrom === 'beginning' ? 'beginning' : { time: startFrom };
  const watermark = await replayWatermark(em, consumerKey);
  const run = (from: LogStart) =>
    applyHistory({
      scope,
      log,
      from,
      signal,
      watermark,
      checkpoint: (tx, offset) => writeCheckpoint(tx, consumerKey, offset, false),
      onProgress: (p) => scope.log.info({ read: p.read, total: p.total, applied: p.applied, duplicates: p.duplicates, skipped: p.skipped, ratePerSecond: Math.round(p.ratePerSecond) }, 'history'),
    });
  let progress: HistoryProgress;
  const from: LogStart = checkpoint?.lastOffset !== undefined ? { after: checkpoint.lastOffset } : initial;
  scope.log.info({ from, watermark }, 'applying the event log history before going live');
  try {
    progress = await run(from);
  } catch (error) {
    if (errorCode(error) !== CoreErrorCode.CURSOR_EXPIRED) throw error;
    // The log dropped entries after the checkpoint while we were stopped: what it still keeps is
    // all there is to apply (the inbox drops what was applied already).
    scope.log.error({ checkpoint: checkpoint?.lastOffset, err: errorMessage(error) }, 'history past the checkpoint expired from the log; applying what it keeps');
    progress = await run('beginning');
  }
  if (signal.aborted) return progress;
  await scope.options.db.fork().transactional((tx) => writeCheckpoint(tx, consumerKey, progress.lastOffset, true));
  scope.log.info({ applied: progress.applied, duplicates: progress.duplicates, skipped: progress.skipped, lastOffset: progress.lastOffset }, 'history applied; live');
  return progress;
}

/**
 * {@link catchUpFromLog} until it succeeds or `signal` aborts: a failure (database down, an event
 * whose handler keeps failing) is logged and tried again from the checkpoint after a growing
 * delay, while the consumer's live deliveries wait in its queue.
 */
export async function catchUpWithRetries(scope: ConsumerScope, log: EventLog, startFrom: 'beginning' | Date, signal: AbortSignal): Promise<void> {
  let delay = 500;
  while (!signal.aborted) {
    try {
      await catchUpFromLog(scope, log, startFrom, signal);
      return;
    } catch (error) {
      if (signal.aborted) return;
      scope.log.error({ code: errorCode(error), err: errorMessage(error), retryInMs: delay }, 'applying the event log history failed; resuming from the checkpoint');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
      });
      delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
    }
  }
}
