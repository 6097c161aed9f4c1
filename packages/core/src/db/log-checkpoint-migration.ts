import { Migration } from '@mikro-orm/migrations';

/**
 * Where each late-joining consumer (`startFrom`) is in the event log's history: the offset of the
 * last entry its committed batches covered, written in the same transaction as each batch, and
 * `done` once it reached the end it read to and went live (later starts skip the history).
 */
export class CoreLogCheckpoint extends Migration {
  override up(): void {
    this.addSql(`create table if not exists tributary_log_checkpoint (
      consumer text primary key,
      last_offset bigint null,
      done boolean not null default false,
      updated_at timestamptz not null default now()
    )`);
  }

  override down(): void {
    this.addSql('drop table if exists tributary_log_checkpoint');
  }
}
