import { defineEntity, type InferEntity } from '@mikro-orm/core';

/**
 * An event written in the same transaction as the change it announces (transactional outbox).
 * The relay publishes unsent rows with publisher confirms and sets `sentAt` after the confirm.
 */
export const OutboxMessage = defineEntity({
  name: 'OutboxMessage',
  tableName: 'tributary_outbox',
  properties: (p) => ({
    id: p.bigint('number').primary().autoincrement(),
    /** Not unique in the table: the consumers' inbox de-duplicates. */
    eventId: p.uuid(),
    type: p.text(),
    tenantId: p.text(),
    /** The serialized envelope, byte for byte what goes on the wire. */
    payload: p.text(),
    createdAt: p.datetime().defaultRaw('now()'),
    sentAt: p.datetime().nullable(),
  }),
});
export type OutboxMessage = InferEntity<typeof OutboxMessage>;

/** An event a consumer has applied: the unique key makes a second application impossible. */
export const InboxEntry = defineEntity({
  name: 'InboxEntry',
  tableName: 'tributary_inbox',
  properties: (p) => ({
    consumer: p.text().primary(),
    eventId: p.uuid().primary(),
    type: p.text(),
    processedAt: p.datetime().defaultRaw('now()'),
    /** The event's own `time` (its outbox write): what the inbox's retention counts from. */
    eventTime: p.datetime().defaultRaw('now()'),
  }),
  primaryKeys: ['consumer', 'eventId'],
});
export type InboxEntry = InferEntity<typeof InboxEntry>;

/** The PostgreSQL channel the outbox trigger notifies on commit, so relays wake at once. */
export const OUTBOX_CHANNEL = 'tributary_outbox';
