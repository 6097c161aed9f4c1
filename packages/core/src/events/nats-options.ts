import type { Logger } from 'pino';
import type { LogRetention } from './log-rabbitmq.ts';

/** The log's retention on NATS: the events stream's limits (`max_age`, `max_bytes`, and `max_msgs` for tests). */
export interface NatsLogOptions extends LogRetention {
  /** Most entries kept (`max_msgs`). Default: no limit. Tests set it tiny so retention shows. */
  maxMessages?: number;
}

export interface NatsTransportOptions {
  /** `nats://host:port`; several servers comma-separated. */
  url: string;
  /** Prefix of subjects, streams and consumers. */
  namespace: string;
  logger: Logger;
  /** The connection's `name`, shown by the server's monitoring. */
  connectionName?: string;
  /** How long publish() waits for JetStream's acks. Default 10 000 ms. */
  publishTimeoutMs?: number;
  /**
   * The event log: the events stream itself, kept by these limits (`log-nats.ts`); `false` turns
   * it off (`Transport.log` is then undefined, the stream keeps a message only until every
   * consumer acked it). Default: on, with `DEFAULT_EVENT_LOG_RETENTION`.
   */
  log?: NatsLogOptions | false;
  /**
   * How long a delivery may stay unacked on a consumer that stopped answering before JetStream
   * gives it to another (`ack_wait`). A live consumer keeps its deliveries with `working()`, so
   * this only bounds how long a dead process's deliveries wait. Default 30 000 ms.
   */
  ackWaitMs?: number;
  /** Deliveries of one message before the transport dead-letters it itself (code DELIVERY_LIMIT). Default 20. */
  deliveryLimit?: number;
  /** How long an exclusive queue's consumer outlives a lost connection (`inactive_threshold`). Default 5 000 ms. */
  exclusiveInactiveMs?: number;
}

/** A name token for streams, consumers and subjects: NATS forbids `.`, `*`, `>` and whitespace in names. */
export const natsToken = (name: string) => name.replace(/[^A-Za-z0-9_-]/g, '_');

/** Stream and subject names of a namespace. */
export function natsNames(namespace: string) {
  const ns = natsToken(namespace);
  return {
    eventsStream: `${ns}_events`,
    retryStream: `${ns}_retry`,
    dlqStream: `${ns}_dlq`,
    /** `<ns>.ev.`: an event of type `a.b` goes to `<ns>.ev.a.b`. */
    eventPrefix: `${ns}.ev.`,
    retryPrefix: `${ns}.rt.`,
    dlqPrefix: `${ns}.dlq.`,
  };
}
export type NatsNames = ReturnType<typeof natsNames>;

/** The header that carries the event id on retry and DLQ copies (`Nats-Msg-Id` there would let the duplicate window drop a second retry). */
export const MESSAGE_ID_HEADER = 'x-tributary-message-id';
/** When a retry copy is due, ms since the epoch. */
export const DUE_HEADER = 'x-tributary-due';

/**
 * The filter subject for one binding: topic `*` is NATS `*`, a trailing `#` is `>`. Undefined
 * when the binding cannot be one (a `#` elsewhere, or a lone `#` that must also match the
 * empty rest): the consumer then takes everything and the transport filters.
 */
export function bindingSubject(prefix: string, binding: string): string | undefined {
  const words = binding.split('.');
  const hashes = words.filter((w) => w === '#').length;
  if (hashes === 0) return prefix + binding;
  // `a.#` also matches `a` itself on AMQP, which `a.>` does not: filter in the transport then.
  return undefined;
}
