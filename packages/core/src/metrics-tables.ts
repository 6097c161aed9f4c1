import client from 'prom-client';
import type { Database } from './db/index.ts';
import { queryRows } from './db/sql.ts';
import { registry } from './metrics.ts';

/** The per-event tables every service has, whose size its retention bounds. */
export const CORE_EVENT_TABLES = ['tributary_inbox', 'tributary_outbox', 'tributary_idempotency'] as const;

const watched = new Map<string, { db: Database; tables: Set<string> }>();

/**
 * The row counts are PostgreSQL's own live-row estimate (`n_live_tup` in `pg_stat_user_tables`),
 * not `count(*)`: a count reads the whole table (seconds per scrape on an inbox of millions of
 * rows, every 15 s), while the estimate is one catalogue lookup, kept by every insert and delete as
 * they commit (not only by VACUUM or ANALYZE, as `pg_class.reltuples` is). Close enough to see a
 * table that grows without bound, which is what this is for.
 */
async function tableRows(): Promise<{ service: string; table: string; rows: number }[]> {
  const out: { service: string; table: string; rows: number }[] = [];
  for (const [service, { db, tables }] of watched) {
    try {
      const rows = await queryRows<{ relname: string; n: string | number }>(
        db.fork(),
        'select relname, n_live_tup as n from pg_stat_user_tables where relname = any(?) and schemaname = current_schema()',
        [[...tables]],
      );
      for (const row of rows) out.push({ service, table: row.relname, rows: Number(row.n) });
    } catch {
      // A database that does not answer has no figure this scrape; /ready reports it.
    }
  }
  return out;
}

new client.Gauge({
  name: 'tributary_table_rows',
  help: "Rows in each per-event table (inbox, outbox, idempotency keys, a service's own), PostgreSQL's live-row estimate",
  labelNames: ['service', 'table'] as const,
  registers: [registry],
  async collect() {
    this.reset();
    for (const { service, table, rows } of await tableRows()) this.set({ service, table }, rows);
  },
});

/** Rows deleted by the retention prunes. */
export const rowsPruned = new client.Counter({
  name: 'tributary_rows_pruned_total',
  help: 'Rows deleted by retention, by table',
  labelNames: ['service', 'table'] as const,
  registers: [registry],
});

/**
 * Report the row counts of a service's tables on every scrape (added to those already watched for
 * it in this database); returns the function that stops watching them.
 */
export function watchTableRows(service: string, db: Database, tables: readonly string[]): () => void {
  let entry = watched.get(service);
  if (!entry || entry.db !== db) {
    entry = { db, tables: new Set() };
    watched.set(service, entry);
  }
  for (const table of tables) entry.tables.add(table);
  const mine = entry;
  return () => {
    for (const table of tables) mine.tables.delete(table);
    if (mine.tables.size === 0 && watched.get(service) === mine) watched.delete(service);
  };
}
