import type { MigrationObject } from '@mikro-orm/core';
import { Migration } from '@mikro-orm/migrations';
import type { Logger } from 'pino';
import type { Database, EntityManager } from '../db/index.ts';
import { queryRows, queryRun, valuesPlaceholders } from '../db/sql.ts';
import { errorMessage } from '../errors.ts';
import { cursorExpired, cursorPastEnd, type AppendableLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStats } from './log.ts';
import type { LogRetention } from './log-rabbitmq.ts';
import { topicMatches, type OutgoingMessage } from './transport.ts';

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

/** The migrations a database that holds the log is opened with (after the core ones). */
export const eventLogMigrations: MigrationObject[] = [{ name: 'log-0001-event-log', class: EventLogTable }];

export interface SqlEventLogOptions extends LogRetention {
  /** At most this many entries (tests; the settings give age and bytes). */
  maxEntries?: number;
  /** How often retention runs. Default 60 s. */
  trimIntervalMs?: number;
  /** How often a follower looks for entries another process appended. Default 500 ms. */
  pollIntervalMs?: number;
  logger?: Logger;
}

interface Row {
  offset: string | number;
  message_id: string | null;
  routing_key: string;
  headers: Record<string, unknown> | string;
  body: Buffer | Uint8Array;
}

const PAGE = 500;

/**
 * The log in a table of the embedded database (`pnpm dev`, where the in-memory bus has no broker
 * to keep a stream): the bus appends every publish before routing it. Appends commit in offset
 * order (they take the head row's lock), so a reader that has seen offset n never finds n-1
 * later. Followers in this process are woken by each append and also poll, so an append by
 * another process on the same database is seen too. Retention (age, bytes, entries) runs on a
 * timer and on demand ({@link trim}).
 */
export class SqlEventLog implements AppendableLog {
  readonly kind = 'embedded' as const;
  private readonly wakers = new Set<() => void>();
  private readonly timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly db: Database,
    private readonly options: SqlEventLogOptions = {},
  ) {
    if (options.maxAgeMs !== undefined || options.maxBytes !== undefined || options.maxEntries !== undefined) {
      this.timer = setInterval(() => {
        this.trim().catch((error) => options.logger?.warn({ err: errorMessage(error) }, 'event log retention failed'));
      }, options.trimIntervalMs ?? 60_000);
      this.timer.unref();
    }
  }

  async append(messages: readonly OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    await this.db.fork().transactional(async (tx) => {
      const [head] = await queryRows<{ next: string | number }>(tx, 'update tributary_event_log_head set next = next + ? where id = 1 returning next', [messages.length]);
      const first = Number(head!.next) - messages.length;
      const params: unknown[] = [];
      messages.forEach((m, i) => params.push(first + i, m.messageId, m.routingKey, JSON.stringify(m.headers ?? {}), m.body));
      await queryRun(tx, `insert into tributary_event_log ("offset", message_id, routing_key, headers, body) values ${valuesPlaceholders(messages.length, 5)}`, params);
    });
    for (const wake of this.wakers) wake();
  }

  async read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined> {
    const em = this.db.fork();
    const end = await this.nextOffset(em);
    let position = await this.startAfter(em, options, end);
    let last: number | undefined;
    while (!signal?.aborted) {
      const rows = await this.page(em, position, end);
      for (const row of rows) {
        if (signal?.aborted) break;
        const entry = toEntry(row);
        position = last = entry.offset;
        if (matches(options, entry)) await onEntry(entry);
      }
      if (rows.length < PAGE) break;
    }
    return last;
  }

  async follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle> {
    const em = this.db.fork();
    let position = await this.startAfter(em, options, await this.nextOffset(em));
    let closed = false;
    let wake: (() => void) | undefined;
    // An append between a page read and the wait must not wait for the poll: remember it.
    let appended = false;
    const waker = () => {
      appended = true;
      wake?.();
    };
    this.wakers.add(waker);
    const run = (async () => {
      while (!closed && !this.closed) {
        appended = false;
        let rows: Row[] = [];
        let failed = false;
        try {
          rows = await this.page(this.db.fork(), position, undefined);
        } catch (error) {
          failed = true;
          this.options.logger?.warn({ err: errorMessage(error) }, 'event log follower could not read; trying again');
        }
        for (const row of rows) {
          if (closed) return;
          const entry = toEntry(row);
          if (entry.offset > position + 1) this.options.logger?.warn({ after: position, next: entry.offset }, 'event log follower fell behind retention: entries were removed before it read them');
          position = entry.offset;
          if (matches(options, entry)) {
            try {
              onEntry(entry);
            } catch (error) {
              this.options.logger?.error({ offset: entry.offset, err: errorMessage(error) }, 'event log follower handler threw');
            }
          }
        }
        if (rows.length === PAGE) continue;
        if (appended && !failed) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, this.options.pollIntervalMs ?? 500);
          function done() {
            clearTimeout(timer);
            wake = undefined;
            resolve();
          }
          wake = done;
        });
      }
    })();
    return {
      close: async () => {
        closed = true;
        wake?.();
        this.wakers.delete(waker);
        await run;
      },
    };
  }

  async stats(): Promise<LogStats> {
    const [row] = await queryRows<{ entries: string | number; bytes: string | number | null; first: string | number | null; last: string | number | null; oldest: Date | string | null }>(
      this.db.fork(),
      'select count(*) as entries, sum(octet_length(body) + octet_length(headers::text)) as bytes, min("offset") as first, max("offset") as last, min(stored_at) as oldest from tributary_event_log',
    );
    const oldest = row?.oldest ? new Date(row.oldest).getTime() : undefined;
    return {
      entries: Number(row?.entries ?? 0),
      bytes: Number(row?.bytes ?? 0),
      first: row?.first == null ? undefined : Number(row.first),
      last: row?.last == null ? undefined : Number(row.last),
      oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000),
    };
  }

  /** Apply retention now: entries older than the age, beyond the bytes, beyond the count. Returns how many went. */
  async trim(): Promise<number> {
    const { maxAgeMs, maxBytes, maxEntries } = this.options;
    const em = this.db.fork();
    let removed = 0;
    if (maxAgeMs !== undefined) {
      removed += await queryRun(em, "delete from tributary_event_log where stored_at < clock_timestamp() - (? * interval '1 millisecond')", [maxAgeMs]);
    }
    if (maxEntries !== undefined) {
      removed += await queryRun(em, 'delete from tributary_event_log where "offset" <= (select "offset" from tributary_event_log order by "offset" desc offset ? limit 1)', [maxEntries]);
    }
    if (maxBytes !== undefined) {
      // The newest entries whose running total fits are kept; everything older goes.
      removed += await queryRun(
        em,
        `delete from tributary_event_log where "offset" <= (
          select "offset" from (select "offset", sum(octet_length(body)) over (order by "offset" desc) as total from tributary_event_log) t
          where total > ? order by "offset" desc limit 1)`,
        [maxBytes],
      );
    }
    return removed;
  }

  /** Stop the retention timer and every follower (the database is the caller's to close). */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const wake of this.wakers) wake();
  }

  private async nextOffset(em: EntityManager): Promise<number> {
    const [row] = await queryRows<{ next: string | number }>(em, 'select next from tributary_event_log_head where id = 1');
    return Number(row?.next ?? 0);
  }

  /** The offset a read starts after. @throws CURSOR_EXPIRED for `{ after }` past the end or before what is kept. */
  private async startAfter(em: EntityManager, options: LogReadOptions, next: number): Promise<number> {
    const { from } = options;
    if (from === 'beginning') return -1;
    if (from === 'end') return next - 1;
    if ('time' in from) {
      const [row] = await queryRows<{ first: string | number | null }>(em, 'select min("offset") as first from tributary_event_log where stored_at >= ?', [from.time]);
      return row?.first == null ? next - 1 : Number(row.first) - 1;
    }
    if (from.after >= next) throw cursorPastEnd(from.after, next - 1);
    const [row] = await queryRows<{ first: string | number | null }>(em, 'select min("offset") as first from tributary_event_log');
    const first = row?.first == null ? next : Number(row.first);
    if (from.after + 1 < first) throw cursorExpired(from.after, first);
    return from.after;
  }

  private page(em: EntityManager, after: number, end: number | undefined): Promise<Row[]> {
    return end === undefined
      ? queryRows<Row>(em, 'select "offset", message_id, routing_key, headers, body from tributary_event_log where "offset" > ? order by "offset" limit ?', [after, PAGE])
      : queryRows<Row>(em, 'select "offset", message_id, routing_key, headers, body from tributary_event_log where "offset" > ? and "offset" < ? order by "offset" limit ?', [after, end, PAGE]);
  }
}

function toEntry(row: Row): LogEntry {
  return {
    offset: Number(row.offset),
    messageId: row.message_id ?? undefined,
    routingKey: row.routing_key,
    headers: typeof row.headers === 'string' ? (JSON.parse(row.headers) as Record<string, unknown>) : row.headers,
    body: Buffer.isBuffer(row.body) ? row.body : Buffer.from(row.body),
  };
}

function matches(options: LogReadOptions, entry: LogEntry): boolean {
  return !options.types || options.types.some((pattern) => topicMatches(pattern, entry.routingKey));
}
