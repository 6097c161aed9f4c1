import type { ParsedEvent } from '@tributary/contracts';
import type { Logger } from 'pino';
import { parentFromTraceparent } from '../context.ts';
import type { EventConsumerOptions } from './consumer-options.ts';
import type { Delivery } from './transport.ts';

/** A delivery and the event its body parsed to. */
export interface Item {
  delivery: Delivery;
  event: ParsedEvent;
}

/**
 * What the parts of an {@link EventConsumer} share: its options, and the names its inbox rows,
 * logs, metrics and spans carry.
 */
export interface ConsumerScope {
  readonly options: EventConsumerOptions;
  readonly queue: string;
  /** The inbox's consumer column: `<service>.<name>`. */
  readonly consumerKey: string;
  readonly maxAttempts: number;
  readonly log: Logger;
  /** The metrics' labels. */
  readonly labels: { service: string; consumer: string };
}

/** The span an event's handling hangs under: the producer span named by its traceparent. */
export function parentOf(event: ParsedEvent) {
  return parentFromTraceparent(event.traceparent, event.tenantid);
}

export function spanAttributes(scope: ConsumerScope, event: ParsedEvent) {
  return { 'messaging.system': 'rabbitmq', 'messaging.destination.name': scope.queue, 'messaging.message.id': event.id, 'tributary.event.type': event.type, 'tributary.service': scope.options.service };
}
