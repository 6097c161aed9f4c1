import type { EntityManager } from '@mikro-orm/postgresql';

/**
 * What `knex.raw()` resolves to: the driver's own result, `pg`'s `{ rows, rowCount }` on
 * PostgreSQL, PGlite's `{ rows, affectedRows }` embedded (a list of them for several statements).
 */
interface DriverResult {
  rows?: unknown[];
  rowCount?: number | null;
  affectedRows?: number;
}

/**
 * Run one statement with bind parameters (`?` placeholders, sent to the server as `$n` values)
 * in the EntityManager's transaction, if it has one. `em.execute()` inlines every parameter into
 * the SQL text instead, quoting it character by character: on hot paths with large values
 * (outbox payloads) that costs more CPU than the statement itself. An array parameter is one
 * PostgreSQL array value (`= any(?)`), not a list. Works on PostgreSQL and PGlite alike. Public
 * APIs only (`getKnex().raw()` and the driver's result): MikroORM turns a raw result into its own
 * shape only in `execute()`, which inlines the parameters.
 */
async function raw(em: EntityManager, sql: string, params: readonly unknown[]): Promise<unknown> {
  const connection = em.getConnection();
  const query = connection.getKnex().raw(sql, params as never);
  const context = em.getTransactionContext();
  if (context) query.transacting(context);
  return query;
}

/** Rows returned by a statement run with bind parameters. */
export async function queryRows<T extends object>(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<T[]> {
  const result = (await raw(em, sql, params)) as DriverResult | DriverResult[];
  return (Array.isArray(result) ? result.map((one) => one.rows) : (result.rows ?? [])) as T[];
}

/** Rows affected by a statement run with bind parameters. */
export async function queryRun(em: EntityManager, sql: string, params: readonly unknown[] = []): Promise<number> {
  const result = (await raw(em, sql, params)) as DriverResult | DriverResult[];
  if (Array.isArray(result)) return 0;
  return result.rowCount ?? result.affectedRows ?? 0;
}

const placeholderLists = new Map<string, string>();
/**
 * `(?, ?, ?), (?, ?, ?), …`: `rows` rows of `columns` placeholders for a multi-row insert,
 * cached (writers mostly use the same few batch sizes).
 */
export function valuesPlaceholders(rows: number, columns: number): string {
  const key = `${rows}x${columns}`;
  let list = placeholderLists.get(key);
  if (list === undefined) {
    const row = `(${Array.from({ length: columns }, () => '?').join(', ')})`;
    list = Array.from({ length: rows }, () => row).join(', ');
    placeholderLists.set(key, list);
  }
  return list;
}
