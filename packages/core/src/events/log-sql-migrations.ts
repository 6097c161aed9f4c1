import type { MigrationObject } from '@mikro-orm/core';
import { Migration } from '@mikro-orm/migrations';

/** The tables of `SqlEventLog` (log-sql.ts). */
class EventLogTable extends Migration {
  override up(): void {
    // "offset" grows with commit order and is never reused, also after retention empties the
    // table: the next one to hand out lives in a row of its own, whose row lock orders appends.
    this.addSql(`create table if not exists tributary_event_log (
      "offset" bigint primary key,
      message_id text null,
      routing_key text not null,
      headers jsonb not null default '{}',
      body bytea not null,
      stored_at timestamptz not null default clock_timestamp()
    )`);
    this.addSql('create index if not exists tributary_event_log_stored_at on tributary_event_log (stored_at)');
    this.addSql('create table if not exists tributary_event_log_head (id int primary key check (id = 1), next bigint not null)');
    this.addSql('insert into tributary_event_log_head (id, next) values (1, 0) on conflict (id) do nothing');
  }

  override down(): void {
    this.addSql('drop table if exists tributary_event_log_head');
    this.addSql('drop table if exists tributary_event_log');
  }
}

class EventLogSizes extends Migration {
  override up(): void {
    // Each entry's size, and the table's entries and bytes kept up to date in the head row by
    // every append and trim: /metrics and retention then read one row, not the whole log.
    this.addSql('alter table tributary_event_log add column if not exists bytes integer not null default 0');
    this.addSql('update tributary_event_log set bytes = octet_length(body) + octet_length(headers::text) where bytes = 0');
    this.addSql('alter table tributary_event_log_head add column if not exists entries bigint not null default 0');
    this.addSql('alter table tributary_event_log_head add column if not exists bytes bigint not null default 0');
    this.addSql('update tributary_event_log_head set entries = (select count(*) from tributary_event_log), bytes = (select coalesce(sum(bytes), 0) from tributary_event_log)');
  }

  override down(): void {
    this.addSql('alter table tributary_event_log_head drop column if exists bytes, drop column if exists entries');
    this.addSql('alter table tributary_event_log drop column if exists bytes');
  }
}

/** The migrations a database that holds the log is opened with (after the core ones). */
export const eventLogMigrations: MigrationObject[] = [
  { name: 'log-0001-event-log', class: EventLogTable },
  { name: 'log-0002-event-log-sizes', class: EventLogSizes },
];
