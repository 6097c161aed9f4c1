import { contextFromTraceparent, runInContext } from '../context.ts';
import { errorCode, errorMessage, isUnrecoverable } from '../errors.ts';
import { metrics } from '../metrics.ts';
import type { ConsumerScope, Item } from './consumer-scope.ts';

/** Through the retry tiers, or to the DLQ on the last attempt or an unrecoverable error. */
export async function fail(scope: ConsumerScope, { delivery, event }: Item, error: unknown): Promise<void> {
  const failure = { code: errorCode(error), message: errorMessage(error) };
  const context = contextFromTraceparent(event.traceparent, event.tenantid);
  const dead = isUnrecoverable(error) || delivery.attempt >= scope.maxAttempts;
  runInContext(context, () => {
    if (dead) scope.log.error({ eventId: event.id, type: event.type, attempt: delivery.attempt, ...failure }, 'event handling failed; dead-lettered');
    else scope.log.warn({ eventId: event.id, type: event.type, attempt: delivery.attempt, ...failure }, 'event handling failed; will retry');
  });
  if (dead) {
    metrics.eventsDeadLettered.inc({ ...scope.labels, type: event.type, code: failure.code });
    await delivery.deadLetter(failure);
  } else {
    metrics.eventsRetried.inc({ ...scope.labels, type: event.type });
    await delivery.retry(delivery.attempt - 1, failure);
  }
}
