/**
 * The shadow schema a rebuild fills: a copy of each live view table's shape, and an inbox of its
 * own, in `tributary_rebuild`. The fold writes there through `search_path` (its SQL names tables
 * unqualified), so the live tables keep serving, untouched, until the swap.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { queryRows, queryRun } from '../db/sql.ts';

/** Where the new views are built. */
export const SHADOW_SCHEMA = 'tributary_rebuild';
/** Where the replaced views go for the moment between the swap and their drop. */
export const OLD_SCHEMA = 'tributary_rebuild_old';
/** The inbox table, live and shadow. */
export const INBOX = 'tributary_inbox';

export const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`;
const qualified = (schema: string, table: string) => `${quoteIdent(schema)}.${quoteIdent(table)}`;

/** Drop what an earlier, interrupted run left (safe when there is nothing). */
export async function dropShadow(em: EntityManager): Promise<void> {
  await queryRun(em, `drop schema if exists ${quoteIdent(SHADOW_SCHEMA)} cascade`);
  await queryRun(em, `drop schema if exists ${quoteIdent(OLD_SCHEMA)} cascade`);
}

/**
 * A fresh shadow schema: each table `LIKE public.<table> INCLUDING ALL` (columns, defaults,
 * checks, indexes, identity), with the live index names (see {@link copyIndexNames}) and
 * sequences of its own (see {@link ownSequences}), and an empty inbox of the live one's shape.
 */
export async function createShadow(em: EntityManager, tables: readonly string[]): Promise<void> {
  await em.transactional(async (tx) => {
    await dropShadow(tx);
    await queryRun(tx, `create schema ${quoteIdent(SHADOW_SCHEMA)}`);
    for (const table of [...tables, INBOX]) {
      await queryRun(tx, `create table ${qualified(SHADOW_SCHEMA, table)} (like ${qualified('public', table)} including all)`);
    }
    await copyIndexNames(tx, [...tables, INBOX]);
    await ownSequences(tx, tables);
  });
}

/** `CREATE [UNIQUE] INDEX <name> ON [ONLY] <schema>.<table> USING …` without its name and schema. */
const indexShape = (definition: string) => definition.replace(/ INDEX \S+ ON (ONLY )?\S+?\./, ' INDEX ON $1');

/**
 * `LIKE … INCLUDING ALL` names the copied indexes itself (`theme_stats_tenant_id_…_idx` for
 * `theme_stats_top`); after the swap a later migration that names the index (`drop index
 * theme_stats_top`) would fail. Rename each copy to its original's name, matched by definition.
 * Renaming a primary key's or unique constraint's index renames the constraint too.
 */
async function copyIndexNames(em: EntityManager, tables: readonly string[]): Promise<void> {
  const rows = await queryRows<{ schemaname: string; tablename: string; indexname: string; indexdef: string }>(
    em,
    'select schemaname, tablename, indexname, indexdef from pg_indexes where schemaname = any(?) and tablename = any(?)',
    [['public', SHADOW_SCHEMA], [...tables]],
  );
  const live = new Map<string, string>();
  for (const r of rows) if (r.schemaname === 'public') live.set(`${r.tablename} ${indexShape(r.indexdef)}`, r.indexname);
  for (const r of rows) {
    if (r.schemaname !== SHADOW_SCHEMA) continue;
    const name = live.get(`${r.tablename} ${indexShape(r.indexdef)}`);
    if (name !== undefined && name !== r.indexname) await queryRun(em, `alter index ${qualified(SHADOW_SCHEMA, r.indexname)} rename to ${quoteIdent(name)}`);
  }
}

/**
 * A `serial` column's default copied by `LIKE` still draws from the live table's sequence, which
 * is dropped with the old table after the swap (and the default with it). Give each such column a
 * sequence of its own, owned by the new column, so it moves with its table.
 */
async function ownSequences(em: EntityManager, tables: readonly string[]): Promise<void> {
  const columns = await queryRows<{ table_name: string; column_name: string }>(
    em,
    `select table_name, column_name from information_schema.columns
     where table_schema = ? and table_name = any(?) and column_default like 'nextval(%'`,
    [SHADOW_SCHEMA, [...tables]],
  );
  for (const { table_name: table, column_name: column } of columns) {
    const sequence = qualified(SHADOW_SCHEMA, `${table}_${column}_seq`);
    await queryRun(em, `create sequence ${sequence} owned by ${qualified(SHADOW_SCHEMA, table)}.${quoteIdent(column)}`);
    await queryRun(em, `alter table ${qualified(SHADOW_SCHEMA, table)} alter column ${quoteIdent(column)} set default nextval('${sequence.replace(/'/g, "''")}')`);
  }
}

/** The inbox's columns besides the key (the retention's `event_time` exists from core migration 0003 on). */
export async function inboxHasEventTime(em: EntityManager): Promise<boolean> {
  const rows = await queryRows<{ n: number }>(em, `select count(*)::int as n from information_schema.columns where table_schema = 'public' and table_name = ? and column_name = 'event_time'`, [INBOX]);
  return (rows[0]?.n ?? 0) > 0;
}
