import type { Database } from '@tributary/core/db';

/**
 * Runs one statement in autocommit, outside any transaction the caller has open: a budget
 * reservation must be visible to other workers at once, and must not hold its row lock for as
 * long as a caller's transaction. (The analysis worker holds none across a model call any more;
 * see its lease design.)
 *
 * Embedded PGlite is one session, so a second connection would wait for a caller's open
 * transaction forever; there the statement joins that transaction when there is one. Nothing
 * else can race inside that single session, so the ledger stays exact.
 */
export async function execute<T extends object>(db: Database, sql: string, params: readonly unknown[]): Promise<T[]> {
  const ambient = db.target.kind === 'pglite' ? db.orm.em.getContext(false).getTransactionContext() : undefined;
  return db.fork().getConnection().execute<T[]>(sql, [...params], 'all', ambient);
}
