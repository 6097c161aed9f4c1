import { countByType, metrics } from '../metrics.ts';
import { SpanKind, withSpan } from '../tracing.ts';
import { queryRows, valuesPlaceholders } from '../db/sql.ts';
import { publish, type NewEvent } from './publish.ts';
import { parentOf, spanAttributes, type ConsumerScope, type Item } from './consumer-scope.ts';

/** One transaction: inbox rows for all, then the handler for those not seen before. */
export async function applyInInbox(scope: ConsumerScope, items: Item[]): Promise<void> {
  const em = scope.options.db.fork();
  let applied: Item[] = [];
  let duplicates: Item[] = [];
  const ended: ((committed: boolean) => void)[] = [];
  const transaction = em.transactional(async (tx) => {
    const params: string[] = [];
    for (const i of items) params.push(scope.consumerKey, i.event.id, i.event.type, i.event.time);
    const inserted = await queryRows<{ event_id: string }>(
      tx,
      `insert into tributary_inbox (consumer, event_id, type, event_time) values ${valuesPlaceholders(items.length, 4)} on conflict do nothing returning event_id`,
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
        await publish(tx, scope.options.service, events);
      },
      log: scope.log,
      attempt,
      lastAttempt: attempt >= scope.maxAttempts,
      afterTransaction: (callback: (committed: boolean) => void) => void ended.push(callback),
    };
    const { handler, batchHandler } = scope.options;
    if (batchHandler) {
      // One span for the batch, under the first event's (a batch has no single parent).
      await withSpan(`${scope.queue} process`, SpanKind.CONSUMER, parentOf(first.event), { ...spanAttributes(scope, first.event), 'messaging.batch.message_count': todo.length }, () =>
        batchHandler(todo.map((i) => i.event), handlerContext),
      );
    } else {
      for (const item of todo) {
        await withSpan(`${scope.queue} process`, SpanKind.CONSUMER, parentOf(item.event), spanAttributes(scope, item.event), () =>
          handler!(item.event, { ...handlerContext, attempt: item.delivery.attempt, lastAttempt: item.delivery.attempt >= scope.maxAttempts }),
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
  countByType(metrics.eventsConsumed, applied.map((i) => i.event.type), (type) => ({ ...scope.labels, type, outcome: 'applied' }));
  countByType(metrics.eventsConsumed, duplicates.map((i) => i.event.type), (type) => ({ ...scope.labels, type, outcome: 'duplicate' }));
  if (applied.length > 0) scope.options.onApplied?.(applied.length);
}
