import type { MigrationObject } from '@mikro-orm/core';
import { Migration, queryRows, queryRun, type Database } from '../db/index.ts';
import { countsNothing, neverFits, windowWait, type Admission, type RateLimitStore, type WindowLimits } from './window.ts';

/**
 * The tables a {@link SqlRateLimitStore} counts in, and the name its locks are taken under; the
 * service that owns the database creates them with {@link rateLimitTablesMigration}.
 */
export interface SqlRateLimitTables {
  /** One row per admission: `id bigserial primary key, key text, at timestamptz, tokens integer` (the cost), indexed on `(key, at)`. */
  calls: string;
  /** One row per paused key: `key text primary key, until timestamptz`. */
  pauses: string;
  /** Admission for `key` holds the transaction lock `pg_advisory_xact_lock(hashtext('<lock>:<key>'))`. */
  lock: string;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

function checkTables(tables: SqlRateLimitTables): SqlRateLimitTables {
  // Table names go into the statements' text: only plain identifiers.
  for (const name of [tables.calls, tables.pauses]) if (!IDENTIFIER.test(name)) throw new Error(`not a plain SQL table name: ${JSON.stringify(name)}`);
  return tables;
}

/**
 * The migration that creates `tables` (idempotent: `if not exists`), for the owning service's
 * list under a name of its own (the AI package's is `ai-0003-rate-limits`).
 */
export function rateLimitTablesMigration(tables: SqlRateLimitTables): MigrationObject['class'] {
  const { calls, pauses } = checkTables(tables);
  return class CreateRateLimitTables extends Migration {
    override up(): void {
      this.addSql(`create table if not exists ${calls} (
      id bigserial primary key,
      key text not null,
      at timestamptz not null,
      tokens integer not null
    )`);
      this.addSql(`create index if not exists ${calls}_key_at on ${calls} (key, at)`);
      this.addSql(`create table if not exists ${pauses} (key text primary key, until timestamptz not null)`);
    }

    override down(): void {
      this.addSql(`drop table if exists ${calls}`);
      this.addSql(`drop table if exists ${pauses}`);
    }
  };
}

/** A connection outside the database's pool. */
type Client = Awaited<ReturnType<Database['connect']>>;

/**
 * The {@link RateLimitStore} in a service's database (PostgreSQL, or PGlite for one process): one
 * row per admitted call in `tables.calls` (pruned as it leaves the window), pauses in
 * `tables.pauses`. Admission is one short transaction under a per-key advisory lock, on the
 * database's clock.
 */
export class SqlRateLimitStore implements RateLimitStore {
  /** Pause reads in flight, by key. */
  private readonly pauseReads = new Map<string, Promise<Admission>>();
  /** PostgreSQL: the connection pause reads go on, outside the pool (made on first use, and again once it ends). */
  private pauseConnection: Promise<Client> | undefined;
  private readonly tables: SqlRateLimitTables;

  constructor(
    private readonly db: Database,
    tables: SqlRateLimitTables,
  ) {
    this.tables = checkTables(tables);
  }

  async tryAcquire(key: string, cost: number, limits: WindowLimits): Promise<Admission> {
    if (countsNothing(limits)) {
      // Nothing to count: only a pause can hold the call, and reading it needs no lock. This
      // read runs inside the call's slot, so the provider's slot stands idle until it answers:
      // calls that ask while one is in flight share it (a wave of answers frees every slot at
      // once), and it goes on a connection of its own, not queued for the pool behind the
      // claims and settlements in flight (bench:ai as deployed, 500 documents, four runs each,
      // interleaved with the commit before: 28.0–28.5 docs/s against 27.2–27.8). A call that
      // joins decides on the table as it was at most one round trip before it asked: the race
      // any read has with a pause committed while it runs.
      let read = this.pauseReads.get(key);
      if (!read) {
        read = this.readPause(key).finally(() => this.pauseReads.delete(key));
        this.pauseReads.set(key, read);
      }
      return read;
    }
    if (neverFits(cost, limits)) return { ok: false, waitMs: Infinity };
    return this.admit(key, cost, limits);
  }

  private admit(key: string, cost: number, limits: WindowLimits): Promise<Admission> {
    const { calls, pauses, lock } = this.tables;
    return this.db.fork().transactional(async (em) => {
      const run = <T extends object>(sql: string, params: unknown[]) => queryRows<T>(em, sql, params);
      await run(`select pg_advisory_xact_lock(hashtext(?))`, [`${lock}:${key}`]);
      const [clock] = await run<{ now: number | string; paused_ms: number | string | null }>(
        `select extract(epoch from now()) * 1000 as now, (select extract(epoch from (until - now())) * 1000 from ${pauses} where key = ? and until > now()) as paused_ms`,
        [key],
      );
      if (clock!.paused_ms !== null) return { ok: false, waitMs: Math.ceil(Number(clock!.paused_ms)) };
      await run(`delete from ${calls} where key = ? and at <= now() - (?::float8 * interval '1 millisecond')`, [key, limits.windowMs]);
      const rows = await run<{ at: number | string; tokens: number }>(`select extract(epoch from at) * 1000 as at, tokens from ${calls} where key = ? order by at, id`, [key]);
      const wait = windowWait(
        rows.map((r) => ({ at: Number(r.at), cost: r.tokens })),
        Number(clock!.now),
        cost,
        limits,
      );
      if (wait > 0) return { ok: false, waitMs: Math.ceil(wait) };
      const [call] = await run<{ id: string | number }>(`insert into ${calls} (key, at, tokens) values (?, now(), ?) returning id`, [key, cost]);
      return { ok: true, call: String(call!.id) };
    });
  }

  private async readPause(key: string): Promise<Admission> {
    const sql = `select extract(epoch from (until - now())) * 1000 as paused_ms from ${this.tables.pauses} where key = $1 and until > now()`;
    let pause: { paused_ms: number | string } | undefined;
    if (this.db.target.kind === 'postgres') {
      const connection = (this.pauseConnection ??= this.connectForPauses());
      const client = await connection;
      try {
        [pause] = (await client.query<{ paused_ms: number | string }>(sql, [key])).rows;
      } catch (error) {
        // The next read makes a new connection.
        if (this.pauseConnection === connection) this.pauseConnection = undefined;
        await client.end().catch(() => {});
        throw error;
      }
    } else {
      [pause] = await queryRows<{ paused_ms: number | string }>(this.db.fork(), sql.replace('$1', '?'), [key]);
    }
    return pause ? { ok: false, waitMs: Math.ceil(Number(pause.paused_ms)) } : { ok: true };
  }

  private connectForPauses(): Promise<Client> {
    const connection: Promise<Client> = this.db.connect().then((client) => {
      // Ended by the database or by Database.close: the next read makes a new one.
      client.once('end', () => {
        if (this.pauseConnection === connection) this.pauseConnection = undefined;
      });
      return client;
    });
    // Not connected: the next read tries again (this one fails with the error).
    connection.catch(() => {
      if (this.pauseConnection === connection) this.pauseConnection = undefined;
    });
    return connection;
  }

  async finish(key: string, call: string): Promise<void> {
    await queryRun(this.db.fork(), `update ${this.tables.calls} set at = greatest(at, now()) where id = ? and key = ?`, [call, key]);
  }

  async pause(key: string, ms: number): Promise<void> {
    const { pauses } = this.tables;
    await queryRun(
      this.db.fork(),
      `insert into ${pauses} (key, until) values (?, now() + (?::float8 * interval '1 millisecond'))
       on conflict (key) do update set until = greatest(${pauses}.until, excluded.until)`,
      [key, ms],
    );
  }
}
