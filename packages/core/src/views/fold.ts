/**
 * One batch of replayed events folded into the shadow views, as the live consumer would fold it
 * (consumer-inbox.ts): inbox rows first, the handler for the events not seen before, in one
 * transaction. The difference is where: `set local search_path` puts the shadow schema first, so
 * the handler's unqualified table names, and the inbox's, are the shadow ones.
 */
import type { ParsedEvent } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { Logger } from 'pino';
import { errorCode, errorMessage, isUnrecoverable, TributaryError } from '../errors.ts';
import { queryRows, queryRun, valuesPlaceholders } from '../db/sql.ts';
import type { HandlerContext } from '../events/consumer-options.ts';
import type { NewEvent } from '../events/publish.ts';
import { ViewsErrorCode, viewsError } from './errors.ts';
import { quoteIdent, SHADOW_SCHEMA } from './shadow.ts';
import type { ViewConsumer } from './types.ts';

/** What folding needs besides the events: where, as whom, and the counts it adds to. */
export interface FoldScope {
  consumer: ViewConsumer;
  /** `<service>.<consumer>`, the inbox's key, as the live consumer's. */
  consumerKey: string;
  logger: Logger;
  /** Announcement types the fold may publish (held back: see {@link FoldScope.announced}). */
  announcements: ReadonlySet<string>;
  /**
   * The last announcement per type, subject and tenant, from committed folds only: the state of
   * that entity as the replay left it. The swap publishes these with its commit, so subscribers
   * and the gateway's cache (`@changedBy`) learn the rebuilt state; every earlier one is dropped.
   */
  announced: Map<string, NewEvent>;
  /** Whether the inbox has `event_time` (core migration 0003 on). */
  eventTime: boolean;
  counts: { applied: number; skipped: number; announcementsDropped: number };
}

/** The handler's context: no outbox (announcements dropped, anything else refused). */
function handlerContext(scope: FoldScope, em: EntityManager, ended: ((committed: boolean) => void)[]): HandlerContext & { held: NewEvent[] } {
  const context = {
    em,
    held: [] as NewEvent[],
    publish: async (events: readonly NewEvent[]) => {
      const refused = events.filter((e) => !scope.announcements.has(e.type));
      if (refused.length > 0) {
        throw viewsError(
          ViewsErrorCode.VIEWS_PUBLISH_REFUSED,
          `${scope.consumerKey} published ${refused.map((e) => e.type).join(', ')} while folding history: a rebuild must not emit events (declare pure announcements in views.announcements)`,
        );
      }
      context.held.push(...events);
    },
    log: scope.logger,
    attempt: 1,
    lastAttempt: false,
    afterTransaction: (callback: (committed: boolean) => void) => void ended.push(callback),
  };
  return context;
}

/** One transaction (a savepoint when `em` is in one): the events new to the shadow inbox, folded. */
async function foldOnce(scope: FoldScope, em: EntityManager, events: readonly ParsedEvent[]): Promise<void> {
  const ended: ((committed: boolean) => void)[] = [];
  let fresh = 0;
  let held: NewEvent[] = [];
  const transaction = em.transactional(async (tx) => {
    await queryRun(tx, `set local search_path to ${quoteIdent(SHADOW_SCHEMA)}, public`);
    const columns = scope.eventTime ? 4 : 3;
    const params: unknown[] = [];
    for (const e of events) params.push(scope.consumerKey, e.id, e.type, ...(scope.eventTime ? [e.time] : []));
    const inserted = await queryRows<{ event_id: string }>(
      tx,
      `insert into tributary_inbox (consumer, event_id, type${scope.eventTime ? ', event_time' : ''}) values ${valuesPlaceholders(events.length, columns)} on conflict do nothing returning event_id`,
      params,
    );
    const ids = new Set(inserted.map((r) => r.event_id));
    const todo = events.filter((e) => ids.delete(e.id));
    if (todo.length === 0) return;
    const context = handlerContext(scope, tx, ended);
    const { handler, batchHandler } = scope.consumer;
    if (batchHandler) await batchHandler([...todo], context);
    else for (const event of todo) await handler!(event, context);
    await tx.flush();
    fresh = todo.length;
    held = context.held;
  });
  const committed = await transaction.then(
    () => true,
    (error: unknown) => error,
  );
  for (const callback of ended) callback(committed === true);
  if (committed !== true) throw committed;
  scope.counts.applied += fresh;
  for (const event of held) {
    const key = `${event.type}\u0000${event.subject}\u0000${event.tenantId ?? event.causedBy?.tenantid ?? ''}`;
    if (scope.announced.has(key)) scope.counts.announcementsDropped++;
    // Delete first: the map's order is then the order of each entity's last announcement.
    scope.announced.delete(key);
    scope.announced.set(key, event);
  }
}

/**
 * Fold `events` (in log order) into the shadow views. When the batch fails, each event is folded
 * alone to find the culprit: one the live consumer would dead-letter at once (an unrecoverable
 * error) is skipped as it would be; any other failure stops the rebuild, since a view missing an
 * event the live one holds is no rebuild.
 */
export async function foldEvents(scope: FoldScope, em: () => EntityManager, events: readonly ParsedEvent[]): Promise<void> {
  if (events.length === 0) return;
  try {
    await foldOnce(scope, em(), events);
    return;
  } catch (error) {
    if (events.length === 1) return settleFailure(scope, events[0]!, error);
  }
  for (const event of events) {
    try {
      await foldOnce(scope, em(), [event]);
    } catch (error) {
      settleFailure(scope, event, error);
    }
  }
}

function settleFailure(scope: FoldScope, event: ParsedEvent, error: unknown): void {
  if (error instanceof TributaryError && error.code === ViewsErrorCode.VIEWS_PUBLISH_REFUSED) throw error;
  if (isUnrecoverable(error)) {
    scope.counts.skipped++;
    scope.logger.warn({ eventId: event.id, type: event.type, code: errorCode(error), err: errorMessage(error) }, 'rebuild: event skipped, as the live consumer dead-letters it');
    return;
  }
  throw viewsError(ViewsErrorCode.VIEWS_FOLD_FAILED, `${scope.consumerKey} failed on event ${event.id} (${event.type}): ${errorMessage(error)}`, error);
}
