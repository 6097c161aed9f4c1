import type { Database, EntityManager } from '@tributary/core/db';

/**
 * Where a budget or cache statement runs: in autocommit, outside any transaction the caller has
 * open (a fresh EntityManager), since a budget reservation must be visible to other workers at
 * once and must not hold its row lock for as long as a caller's transaction. (The analysis worker
 * holds none across a model call any more; see its lease design.)
 *
 * Embedded PGlite is one session, so a second connection would wait for a caller's open
 * transaction forever; there the statement joins that transaction when there is one (the
 * ambient EntityManager's). Nothing else can race inside that single session, so the ledger
 * stays exact. Run the statement with `queryRows`/`queryRun` from `@tributary/core/db`.
 */
export function autocommit(db: Database): EntityManager {
  return db.target.kind === 'pglite' ? db.orm.em.getContext(false) : db.fork();
}
