/**
 * Reading the log into the folds: entries in offset order, parsed by their contracts, gathered
 * into batches and handed to each consumer that takes their type.
 */
import { parse, type ParsedEvent } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import { errorCode, errorMessage } from '../errors.ts';
import type { EventLog, LogEntry, LogStart } from '../events/log.ts';
import { topicMatches } from '../events/transport.ts';
import { foldEvents, type FoldScope } from './fold.ts';

export interface Replay {
  log: EventLog;
  folds: readonly FoldScope[];
  batchSize: number;
  signal: AbortSignal | undefined;
  /** Called with each entry's offset once it is folded. */
  onOffset: (offset: number) => void;
}

/** Every type pattern the folds take: the read's filter. */
export function replayTypes(folds: readonly FoldScope[]): string[] {
  return [...new Set(folds.flatMap((f) => f.consumer.types))];
}

/**
 * Fold every entry from `from` to the log's end as of the call. Resolves with the last offset
 * read (`from`'s own when there was nothing new), and how many entries were folded.
 */
export async function replay(r: Replay, em: () => EntityManager, from: LogStart): Promise<{ last: number | undefined; entries: number }> {
  let batch: { offset: number; event: ParsedEvent | undefined; routingKey: string }[] = [];
  let entries = 0;
  const flush = async () => {
    const current = batch;
    batch = [];
    for (const fold of r.folds) {
      const events = current.filter((b) => b.event !== undefined && fold.consumer.types.some((t) => topicMatches(t, b.routingKey))).map((b) => b.event!);
      await foldEvents(fold, em, events);
    }
    const last = current.at(-1);
    if (last) r.onOffset(last.offset);
  };
  const onEntry = async (entry: LogEntry) => {
    entries++;
    batch.push({ offset: entry.offset, event: parseEntry(r, entry), routingKey: entry.routingKey });
    if (batch.length >= r.batchSize) await flush();
  };
  const last = await r.log.read({ from, types: replayTypes(r.folds) }, onEntry, r.signal);
  await flush();
  return { last: last ?? (typeof from === 'object' && 'after' in from ? from.after : undefined), entries };
}

/** The event, or undefined for one that violates its contract (the live consumer dead-letters those too). */
function parseEntry(r: Replay, entry: LogEntry): ParsedEvent | undefined {
  try {
    return parse(entry.body.toString('utf8'));
  } catch (error) {
    for (const fold of r.folds) {
      if (!fold.consumer.types.some((t) => topicMatches(t, entry.routingKey))) continue;
      fold.counts.skipped++;
      fold.logger.warn({ offset: entry.offset, messageId: entry.messageId, code: errorCode(error), err: errorMessage(error) }, 'rebuild: log entry violates its contract; skipped');
    }
    return undefined;
  }
}
