import { parse, type ParsedEvent } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import { metrics } from '../metrics.ts';
import { CoreErrorCode, errorCode, errorMessage, isUnrecoverable, TributaryError } from '../errors.ts';
import type { BatchEventHandler, EventConsumerOptions, HandlerContext } from './consumer-options.ts';
import { applyInInbox } from './consumer-inbox.ts';
import { beforeWatermark } from './inbox-retention.ts';
import type { ConsumerScope, Item } from './consumer-scope.ts';
import type { EventLog, LogEntry, LogStart } from './log.ts';
import type { Delivery } from './transport.ts';

/** Entries applied in one transaction while replaying history (the live path's batches are smaller: latency). */
export const DEFAULT_HISTORY_BATCH = 200;
/** A progress line every this many entries read. */
const PROGRESS_EVERY = 1_000;

export interface HistoryProgress {
  /** Entries read so far (of the consumer's types). */
  read: number;
  /** Entries in the range being read, all types, when the log can tell; an upper bound of `read`'s final value. */
  total: number | undefined;
  /** Applied: new to this consumer. */
  applied: number;
  /** Already in the inbox (applied before, by the history or live). */
  duplicates: number;
  /** Not applied: a contract violation, an unrecoverable handler error, `relevant` said no, or before the watermark. */
  skipped: number;
  /** Entries read per second since the start. */
  ratePerSecond: number;
  /** Offset of the last entry of the last committed batch. */
  lastOffset: number | undefined;
}

export interface ApplyHistoryOptions {
  /** The consumer the entries are applied as: its handler, inbox key, labels and logger. */
  scope: ConsumerScope;
  log: EventLog;
  from: LogStart;
  /** Topic patterns to read; default the consumer's `types`. */
  types?: readonly string[];
  signal?: AbortSignal;
  /** Entries per transaction. Default {@link DEFAULT_HISTORY_BATCH}. */
  batchSize?: number;
  /**
   * Events whose `time` is before this were applied already and their inbox rows may be pruned
   * (H3's `replayWatermark`): skipped, never applied again.
   */
  watermark?: Date | undefined;
  /**
   * Runs in each batch's own transaction, after the handler, with the offset of the batch's last
   * entry (a checkpoint committed with the effects). For a batch with nothing new to apply, it
   * runs in a short transaction of its own after it: every entry of it is already in the inbox.
   */
  checkpoint?: (em: EntityManager, lastOffset: number) => Promise<void>;
  /** Called every {@link PROGRESS_EVERY} entries and at the end. */
  onProgress?: (progress: HistoryProgress) => void;
}

/**
 * Apply a range of the event log to a consumer, in order, in batches through the same inbox
 * transaction as live deliveries (so an event already applied, by an earlier run or live, is
 * dropped by its inbox row). Reusable by any tool that replays the log through a consumer's
 * handler (rebuilds).
 *
 * A contract violation, an {@link isUnrecoverable} handler error and an event before the
 * watermark are skipped, logged and counted (`tributary_events_consumed_total` with outcome
 * `history_invalid`, `history_unrecoverable`, `history_before_watermark`): a log entry cannot be
 * dead-lettered (the broker's DLQ takes deliveries), and it stays in the log. Any other failure of
 * an event (after the batch is retried event by event) stops the read with the error: the caller
 * resumes from its last checkpoint, rather than losing the event to a database outage.
 *
 * Resolves with the progress at the end; `lastOffset` is the last entry the log read, kept by
 * `types` or not (resuming after it skips nothing), when not aborted.
 */
export async function applyHistory(options: ApplyHistoryOptions): Promise<HistoryProgress> {
  const { scope, log, signal } = options;
  const batchSize = options.batchSize ?? DEFAULT_HISTORY_BATCH;
  const started = Date.now();
  const progress: HistoryProgress = { read: 0, total: await totalOf(log, options.from), applied: 0, duplicates: 0, skipped: 0, ratePerSecond: 0, lastOffset: undefined };
  const report = () => {
    progress.ratePerSecond = progress.read / Math.max(0.001, (Date.now() - started) / 1000);
    options.onProgress?.({ ...progress });
  };
  const historyScope = withCheckpoint(scope, options.checkpoint);
  let batch: { entry: LogEntry; event: ParsedEvent }[] = [];
  let batchEnd: number | undefined;
  const flush = async () => {
    if (batchEnd === undefined) return;
    const items = await relevantItems(scope, batch, progress);
    const counts = await applyBatch(historyScope, items, batchEnd, options.checkpoint);
    progress.applied += counts.applied;
    progress.duplicates += counts.duplicates;
    progress.skipped += counts.skipped;
    progress.lastOffset = batchEnd;
    batch = [];
    batchEnd = undefined;
  };
  const last = await log.read(
    { from: options.from, types: options.types ?? scope.options.types },
    async (entry) => {
      progress.read++;
      batchEnd = entry.offset;
      const event = parseEntry(scope, entry, options.watermark);
      if (event) batch.push({ entry, event });
      else progress.skipped++;
      if (batch.length >= batchSize) await flush();
      if (progress.read % PROGRESS_EVERY === 0) report();
    },
    signal,
  );
  await flush();
  if (!signal?.aborted) progress.lastOffset = last ?? progress.lastOffset;
  report();
  return progress;
}

/** The entries in the range read, all types (the log counts no type), when it can tell. */
async function totalOf(log: EventLog, from: LogStart): Promise<number | undefined> {
  const stats = await log.stats();
  if (from === 'beginning') return stats.entries;
  if (from === 'end') return 0;
  if ('after' in from) return stats.last === undefined ? 0 : Math.max(0, stats.last - from.after);
  return undefined;
}

/** The entry's event, or undefined (logged and counted) when it is not to be applied. */
function parseEntry(scope: ConsumerScope, entry: LogEntry, watermark: Date | undefined): ParsedEvent | undefined {
  let event: ParsedEvent;
  try {
    event = parse(entry.body.toString('utf8'));
  } catch (error) {
    // The live path dead-letters these bytes; they will never parse here either.
    scope.log.warn({ offset: entry.offset, messageId: entry.messageId, code: errorCode(error), err: errorMessage(error) }, 'history entry violates its contract; skipped');
    metrics.eventsConsumed.inc({ ...scope.labels, type: entry.routingKey, outcome: 'history_invalid' });
    return undefined;
  }
  // Applied before the inbox rows that would drop it were pruned (or older than the inbox keeps).
  if (beforeWatermark(event.time, watermark)) {
    metrics.eventsConsumed.inc({ ...scope.labels, type: event.type, outcome: 'history_before_watermark' });
    return undefined;
  }
  return event;
}

/** The batch's items, without those the consumer's `relevant` declines (as the live path acks them). */
async function relevantItems(scope: ConsumerScope, batch: { entry: LogEntry; event: ParsedEvent }[], progress: HistoryProgress): Promise<Item[]> {
  const items: Item[] = [];
  for (const { entry, event } of batch) {
    if (scope.options.relevant && !(await scope.options.relevant(event, scope.options.db.fork()))) {
      metrics.eventsConsumed.inc({ ...scope.labels, type: event.type, outcome: 'irrelevant' });
      progress.skipped++;
      continue;
    }
    items.push({ delivery: entryDelivery(entry), event });
  }
  return items;
}

/**
 * One batch in one inbox transaction with its checkpoint; if it fails, each event alone, to find
 * the one that fails (skipped if unrecoverable, else the read stops with its error).
 */
async function applyBatch(
  scope: HistoryScope,
  items: Item[],
  lastOffset: number,
  checkpoint: ApplyHistoryOptions['checkpoint'],
): Promise<{ applied: number; duplicates: number; skipped: number }> {
  const counts = { applied: 0, duplicates: 0, skipped: 0 };
  const run = async (part: Item[], offset: number) => {
    Object.assign(scope.pending, { offset, ran: false, applied: 0 });
    if (part.length > 0) await applyInInbox(scope, part);
    const { ran, applied } = scope.pending;
    counts.applied += applied;
    counts.duplicates += part.length - applied;
    // Nothing new: the handler (and the checkpoint with it) did not run; every entry is in the inbox.
    if (!ran && checkpoint) await scope.options.db.fork().transactional((em) => checkpoint(em, offset));
  };
  try {
    await run(items, lastOffset);
    return counts;
  } catch (error) {
    if (items.length <= 1 && !isUnrecoverable(error)) throw error;
  }
  for (const item of items) {
    try {
      // Its own offset: the entries after it, up to the batch's end, are not applied yet.
      await run([item], itemOffset(item));
    } catch (error) {
      if (!isUnrecoverable(error)) throw new TributaryError(CoreErrorCode.HANDLER_FAILED, `history: event ${item.event.id} (${item.event.type}) failed: ${errorMessage(error)}`, { cause: error });
      scope.log.error({ eventId: item.event.id, type: item.event.type, code: errorCode(error), err: errorMessage(error) }, 'history event cannot be applied; skipped');
      metrics.eventsConsumed.inc({ ...scope.labels, type: item.event.type, outcome: 'history_unrecoverable' });
      counts.skipped++;
    }
  }
  if (checkpoint) await scope.options.db.fork().transactional((em) => checkpoint(em, lastOffset));
  return counts;
}

/** A consumer scope whose handler also writes the checkpoint, in the batch's transaction. */
interface HistoryScope extends ConsumerScope {
  pending: { offset: number; ran: boolean; applied: number };
}

function withCheckpoint(scope: ConsumerScope, checkpoint: ApplyHistoryOptions['checkpoint']): HistoryScope {
  const { handler, batchHandler, stagedHandler, ...settings } = scope.options;
  if (stagedHandler) throw new TributaryError(CoreErrorCode.HISTORY_UNSUPPORTED, `${scope.consumerKey}: a staged handler cannot replay history`);
  const pending = { offset: -1, ran: false, applied: 0 };
  // Every handler as a batch handler, so the checkpoint runs once per transaction, after the effects.
  const wrapped: BatchEventHandler = async (events: ParsedEvent[], context: HandlerContext) => {
    if (batchHandler) await batchHandler(events, context);
    else for (const event of events) await handler!(event, context);
    pending.ran = true;
    pending.applied = events.length;
    if (checkpoint) await checkpoint(context.em, pending.offset);
  };
  const options: EventConsumerOptions = { ...settings, batchHandler: wrapped };
  return { ...scope, options, pending };
}

function itemOffset(item: Item): number {
  return Number(item.delivery.headers[ENTRY_OFFSET]);
}

/** Where a log entry's offset rides on its delivery adapter. */
const ENTRY_OFFSET = 'x-tributary-log-offset';

/**
 * A log entry in the shape the inbox transaction takes. It is not a broker delivery: nothing
 * settles it (the checkpoint does), so settling it is a bug and rejects.
 */
function entryDelivery(entry: LogEntry): Delivery {
  const refuse = () => Promise.reject(new TributaryError(CoreErrorCode.HANDLER_FAILED, 'a history entry is not a broker delivery: it cannot be acked, retried or dead-lettered'));
  return {
    body: entry.body,
    messageId: entry.messageId,
    routingKey: entry.routingKey,
    headers: { ...entry.headers, [ENTRY_OFFSET]: entry.offset },
    attempt: 1,
    redelivered: false,
    ack: refuse,
    retry: refuse,
    deadLetter: refuse,
  };
}
