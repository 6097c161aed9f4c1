import { currentVersion, validateData, type Envelope, type EventData, type EventType } from '@tributary/contracts';
import type { EntityManager } from '@mikro-orm/postgresql';
import { randomUUID } from 'node:crypto';
import { contextFromTraceparent, currentContext, parentFromTraceparent } from '../context.ts';
import { producerTraceparent } from '../tracing.ts';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { queryRun, valuesPlaceholders } from '../db/sql.ts';

type DataOf<T extends EventType> = EventData<(typeof currentVersion)[T]>;

/** One event to publish: its type, the aggregate it is about, and its data (validated here). */
export interface NewEvent<T extends EventType = EventType> {
  type: T;
  subject: string;
  data: DataOf<T>;
  /** Defaults to the tenant of the current request or message. */
  tenantId?: string;
  /** Defaults to a random UUID. */
  id?: string;
  /**
   * The event this one follows from: it continues that event's trace and defaults to its
   * tenant. A batch handler names it, since a batch runs in one context (its first event's).
   */
  causedBy?: Pick<Envelope, 'traceparent' | 'tenantid'>;
}

/**
 * Write events to the outbox inside the caller's transaction: they are published if and only if
 * the transaction commits. Data is validated against the contract the producer writes today;
 * `traceparent` continues the current trace so consumers join it.
 * @throws TributaryError `OUTBOX_NO_TRANSACTION` outside a transaction: a publish that could
 *   commit apart from the change it announces is exactly the bug the outbox exists to prevent.
 */
export async function publish(em: EntityManager, source: string, events: readonly NewEvent[]): Promise<Envelope[]> {
  if (!em.isInTransaction()) {
    throw new TributaryError(CoreErrorCode.OUTBOX_NO_TRANSACTION, 'publish() must run inside a transaction (em.transactional)');
  }
  if (events.length === 0) return [];
  const context = currentContext() ?? contextFromTraceparent(undefined);
  const time = new Date().toISOString();
  const envelopes = events.map((event) => {
    const parent = event.causedBy ? parentFromTraceparent(event.causedBy.traceparent, event.causedBy.tenantid) : context;
    const tenantid = event.tenantId ?? parent.tenantId;
    if (!tenantid) throw new TributaryError('TENANT_REQUIRED', `event ${event.type} has no tenant`);
    const dataschema = currentVersion[event.type];
    const id = event.id ?? randomUUID();
    const envelope: Envelope = {
      id,
      type: event.type,
      source,
      specversion: '1.0',
      time,
      dataschema,
      subject: event.subject,
      traceparent: producerTraceparent(`publish ${event.type}`, { 'messaging.system': 'rabbitmq', 'messaging.destination.name': event.type, 'messaging.message.id': id, 'tributary.source': source }, parent),
      tenantid,
      data: validateData(dataschema, event.data),
    };
    return envelope;
  });
  // One multi-row insert in the caller's transaction; the table's trigger NOTIFYs relays on commit.
  // Bind parameters: the payloads travel as values, not quoted into the SQL text. PostgreSQL
  // takes at most 65,535 of them in a statement, hence chunks of ROWS_PER_INSERT events.
  for (let start = 0; start < envelopes.length; start += ROWS_PER_INSERT) {
    const chunk = envelopes.slice(start, start + ROWS_PER_INSERT);
    const params: string[] = [];
    for (const e of chunk) params.push(e.id, e.type, e.tenantid, JSON.stringify(e));
    await queryRun(em, `insert into tributary_outbox (event_id, type, tenant_id, payload) values ${valuesPlaceholders(chunk.length, 4)}`, params);
  }
  return envelopes;
}

const ROWS_PER_INSERT = 1_000;
