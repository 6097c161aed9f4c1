import { Migration } from '@mikro-orm/migrations';
import type { MigrationObject } from '@mikro-orm/core';
import { OUTBOX_CHANNEL } from './entities.ts';
import { CoreLogCheckpoint } from './log-checkpoint-migration.ts';

class CoreOutboxInbox extends Migration {
  override up(): void {
    this.addSql(`create table if not exists tributary_outbox (
      id bigserial primary key,
      event_id uuid not null unique,
      type text not null,
      tenant_id text not null,
      payload text not null,
      created_at timestamptz not null default now(),
      sent_at timestamptz null
    )`);
    // The relay only ever scans unsent rows; keep that scan small whatever the history.
    this.addSql('create index if not exists tributary_outbox_unsent on tributary_outbox (id) where sent_at is null');
    this.addSql('create index if not exists tributary_outbox_sent_at on tributary_outbox (sent_at) where sent_at is not null');
    // NOTIFY is transactional: delivered at commit, dropped on rollback, de-duplicated per
    // transaction. One per statement is enough to wake the relays.
    this.addSql(`create or replace function tributary_outbox_notify() returns trigger language plpgsql as $$
      begin perform pg_notify('${OUTBOX_CHANNEL}', ''); return null; end $$`);
    this.addSql('drop trigger if exists tributary_outbox_notify on tributary_outbox');
    this.addSql(
      'create trigger tributary_outbox_notify after insert on tributary_outbox for each statement execute function tributary_outbox_notify()',
    );
    this.addSql(`create table if not exists tributary_inbox (
      consumer text not null,
      event_id uuid not null,
      type text not null,
      processed_at timestamptz not null default now(),
      primary key (consumer, event_id)
    )`);
  }

  override down(): void {
    this.addSql('drop table if exists tributary_inbox');
    this.addSql('drop trigger if exists tributary_outbox_notify on tributary_outbox');
    this.addSql('drop function if exists tributary_outbox_notify()');
    this.addSql('drop table if exists tributary_outbox');
  }
}

/**
 * The outbox's unique index on `event_id` cost every insert (and every mark-sent) a random-key
 * B-tree write and protected nothing: ids are fresh UUIDs, and the consumers' inbox is what
 * de-duplicates an event that reaches the broker twice, however that happens.
 */
class OutboxNoEventIdIndex extends Migration {
  override up(): void {
    this.addSql('alter table tributary_outbox drop constraint if exists tributary_outbox_event_id_key');
  }

  override down(): void {
    this.addSql('alter table tributary_outbox add constraint tributary_outbox_event_id_key unique (event_id)');
  }
}

/**
 * Idempotency keys of mutations (`idempotent()` in @tributary/core/idempotency): one row per
 * (scope, key), written in the mutation's own transaction, kept `IDEMPOTENCY_KEY_TTL_HOURS`.
 */
class CoreIdempotency extends Migration {
  override up(): void {
    this.addSql(`create table if not exists tributary_idempotency (
      scope text not null,
      key text not null,
      request_hash text not null,
      response jsonb null,
      created_at timestamptz not null default now(),
      primary key (scope, key)
    )`);
    this.addSql('create index if not exists tributary_idempotency_created_at on tributary_idempotency (created_at)');
  }

  override down(): void {
    this.addSql('drop table if exists tributary_idempotency');
  }
}

/**
 * Inbox retention (`pruneInbox` in events/inbox-retention.ts): each row keeps its event's own
 * `time` (the outbox write), so a prune deletes by the age of the event, not of its arrival, and a
 * log replay can compare an event's time with the consumer's watermark (`tributary_inbox_watermark`:
 * rows of events older than `pruned_before` may be gone). Rows from before this migration take their
 * `processed_at`, never earlier than their event's time, so they are kept at least as long. The
 * default now() keeps inserts of a process not yet upgraded working during a rolling upgrade.
 */
class InboxRetention extends Migration {
  override up(): void {
    this.addSql('alter table tributary_inbox add column if not exists event_time timestamptz null');
    this.addSql('update tributary_inbox set event_time = processed_at where event_time is null');
    this.addSql('alter table tributary_inbox alter column event_time set default now(), alter column event_time set not null');
    // The prune's only access path: one consumer's oldest rows, in batches.
    this.addSql('create index if not exists tributary_inbox_consumer_event_time on tributary_inbox (consumer, event_time)');
    this.addSql(`create table if not exists tributary_inbox_watermark (
      consumer text primary key,
      pruned_before timestamptz not null
    )`);
  }

  override down(): void {
    this.addSql('drop table if exists tributary_inbox_watermark');
    this.addSql('drop index if exists tributary_inbox_consumer_event_time');
    this.addSql('alter table tributary_inbox drop column if exists event_time');
  }
}

/** Migrations of the tables every service has (outbox, inbox, idempotency keys). Run before the service's own. */
export const coreMigrations: MigrationObject[] = [
  { name: '0000-core-outbox-inbox', class: CoreOutboxInbox },
  { name: '0001-outbox-no-event-id-index', class: OutboxNoEventIdIndex },
  { name: '0002-core-idempotency', class: CoreIdempotency },
  { name: '0003-inbox-retention', class: InboxRetention },
  { name: '0004-log-checkpoint', class: CoreLogCheckpoint },
];

export { Migration };
