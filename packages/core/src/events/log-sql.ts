import type { Logger } from 'pino';
import type { Database, EntityManager } from '../db/index.ts';
import { queryRows, queryRun, valuesPlaceholders } from '../db/sql.ts';
import { errorMessage } from '../errors.ts';
import { cursorExpired, cursorPastEnd, type AppendableLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStats } from './log.ts';
import type { LogRetention } from './log-rabbitmq.ts';
import { topicMatches, type OutgoingMessage } from './transport.ts';

export { eventLogMigrations } from './log-sql-migrations.ts';

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
    const params: unknown[] = [];
    let total = 0;
    for (const m of messages) {
      const headers = JSON.stringify(m.headers ?? {});
      const bytes = m.body.length + Buffer.byteLength(headers);
      total += bytes;
      params.push(0, m.messageId, m.routingKey, headers, m.body, bytes);
    }
    await this.db.fork().transactional(async (tx) => {
      const [head] = await queryRows<{ next: string | number }>(
        tx,
        'update tributary_event_log_head set next = next + ?, entries = entries + ?, bytes = bytes + ? where id = 1 returning next',
        [messages.length, messages.length, total],
      );
      const first = Number(head!.next) - messages.length;
      for (let i = 0; i < messages.length; i++) params[i * 6] = first + i;
      await queryRun(tx, `insert into tributary_event_log ("offset", message_id, routing_key, headers, body, bytes) values ${valuesPlaceholders(messages.length, 6)}`, params);
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
    const [row] = await queryRows<{ entries: string | number; bytes: string | number; next: string | number; first: string | number | null; oldest: Date | string | null }>(
      this.db.fork(),
      `select h.entries, h.bytes, h.next, f."offset" as first, f.stored_at as oldest
       from tributary_event_log_head h left join lateral (select "offset", stored_at from tributary_event_log order by "offset" limit 1) f on true where h.id = 1`,
    );
    const entries = Number(row?.entries ?? 0);
    const oldest = row?.oldest ? new Date(row.oldest).getTime() : undefined;
    return {
      entries,
      bytes: Number(row?.bytes ?? 0),
      first: row?.first == null ? undefined : Number(row.first),
      last: row?.first == null ? undefined : Number(row.next) - 1,
      oldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000),
    };
  }

  /**
   * Apply retention now: entries older than the age, beyond the count, beyond the bytes (oldest
   * first). Holds the head row meanwhile, so appends wait and the counters stay exact. Returns how
   * many went.
   */
  async trim(): Promise<number> {
    const { maxAgeMs, maxBytes, maxEntries } = this.options;
    if (maxAgeMs === undefined && maxBytes === undefined && maxEntries === undefined) return 0;
    return this.db.fork().transactional(async (tx) => {
      const [head] = await queryRows<{ entries: string | number; bytes: string | number }>(tx, 'select entries, bytes from tributary_event_log_head where id = 1 for update');
      const entries = Number(head?.entries ?? 0);
      const bytes = Number(head?.bytes ?? 0);
      // The newest offset to drop by each rule; the running sum stops as soon as it is reached.
      const cuts: string[] = [];
      const params: unknown[] = [];
      if (maxAgeMs !== undefined) {
        cuts.push(`(select max("offset") from tributary_event_log where stored_at < clock_timestamp() - (? * interval '1 millisecond'))`);
        params.push(maxAgeMs);
      }
      if (maxEntries !== undefined && entries > maxEntries) {
        cuts.push('(select "offset" from tributary_event_log order by "offset" offset ? limit 1)');
        params.push(entries - maxEntries - 1);
      }
      if (maxBytes !== undefined && bytes > maxBytes) {
        cuts.push('(select "offset" from (select "offset", sum(bytes) over (order by "offset") as running from tributary_event_log) t where running >= ? order by "offset" limit 1)');
        params.push(bytes - maxBytes);
      }
      if (cuts.length === 0) return 0;
      const [gone] = await queryRows<{ n: string | number }>(
        tx,
        `with gone as (delete from tributary_event_log where "offset" <= greatest(${cuts.map((c) => `coalesce(${c}, -1)`).join(', ')}) returning bytes),
         counted as (update tributary_event_log_head set entries = entries - (select count(*) from gone), bytes = bytes - (select coalesce(sum(bytes), 0) from gone) where id = 1)
         select count(*) as n from gone`,
        params,
      );
      return Number(gone?.n ?? 0);
    });
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
