import type { EntityManager } from '@mikro-orm/postgresql';
import { metrics } from '../metrics.ts';
import { SpanKind, withSpan } from '../tracing.ts';
import { queryRows } from '../db/sql.ts';
import type { StagedHandlerContext, TransactionContext } from './consumer-options.ts';
import { fail } from './consumer-failure.ts';
import { parentOf, spanAttributes, type ConsumerScope, type Item } from './consumer-scope.ts';
import { publish } from './publish.ts';
import type { Delivery } from './transport.ts';

/** Thrown inside a staged handler's settling transaction to roll it back when its work declines. */
const DECLINED = new Error('the settling work declined; rolled back');

/**
 * A staged handler's event, handled with no transaction open; acked once the handler returns,
 * handed back later (`defer`) if it asks, failed as the consumer's `processOne` does if it
 * throws. No inbox lookup first (a statement per event on the hot path): the handler's own
 * first transaction finds work a redelivered event already did, and `settle` refuses a second
 * effect.
 */
export async function processStaged(scope: ConsumerScope, item: Item, defer: (delivery: Delivery, ms: number) => void): Promise<void> {
  const { delivery, event } = item;
  const { db, service } = scope.options;
  const transactionContext = (em: EntityManager): TransactionContext => ({ em, publish: (events) => publish(em, service, events).then(() => undefined) });
  let outcome: 'settled' | 'declined' | 'duplicate' | undefined;
  const context: StagedHandlerContext = {
    transaction: (work) => db.fork().transactional((tx) => work(transactionContext(tx))),
    settle: async (work) => {
      outcome = await db
        .fork()
        .transactional(async (tx) => {
          const inserted = await queryRows(tx, 'insert into tributary_inbox (consumer, event_id, type, event_time) values (?, ?, ?, ?) on conflict do nothing returning event_id', [
            scope.consumerKey,
            event.id,
            event.type,
            event.time,
          ]);
          if (inserted.length === 0) return 'duplicate' as const;
          if (!(await work(transactionContext(tx)))) throw DECLINED;
          return 'settled' as const;
        })
        .catch((error: unknown) => {
          if (error === DECLINED) return 'declined' as const;
          throw error;
        });
      return outcome;
    },
    log: scope.log,
    attempt: delivery.attempt,
    lastAttempt: delivery.attempt >= scope.maxAttempts,
  };
  let later: void | { retryInMs: number };
  try {
    later = await withSpan(`${scope.queue} process`, SpanKind.CONSUMER, parentOf(event), spanAttributes(scope, event), () => scope.options.stagedHandler!(event, context));
  } catch (error) {
    await fail(scope, item, error);
    return;
  }
  if (later) {
    defer(delivery, later.retryInMs);
    return;
  }
  if (outcome) metrics.eventsConsumed.inc({ ...scope.labels, type: event.type, outcome: outcome === 'settled' ? 'applied' : 'duplicate' });
  if (outcome === 'settled') scope.options.onApplied?.(1);
  await delivery.ack();
}
