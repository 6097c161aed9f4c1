import { describe, expect, it } from 'vitest';
import { openDatabase, queryRows, queryRun, type Database } from '../src/db/index.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { servicesAvailable } from '../src/testing/services.ts';
import { silent } from './fixtures/harness.ts';

/** queryRows and queryRun against each driver: what they return is the driver's result, read by us. */
function describeSql(name: string, open: () => Promise<{ db: Database; cleanup: () => Promise<void> }>) {
  describe(`queryRows and queryRun (${name})`, () => {
    it('returns the rows and the affected count, inside and outside a transaction', async () => {
      const { db, cleanup } = await open();
      try {
        const em = db.fork();
        await queryRun(em, 'create table sql_probe (id int primary key, name text)');
        expect(await queryRun(em, 'insert into sql_probe (id, name) values (?, ?), (?, ?), (?, ?)', [1, "o'ne", 2, 'two?', 3, 'three'])).toBe(3);
        expect(await queryRows<{ id: number; name: string }>(em, 'select id, name from sql_probe where id = any(?) order by id', [[1, 2]])).toEqual([
          { id: 1, name: "o'ne" },
          { id: 2, name: 'two?' },
        ]);
        expect(await queryRows(em, 'select id from sql_probe where id > ?', [9])).toEqual([]);
        await db.fork().transactional(async (tx) => {
          expect(await queryRun(tx, 'update sql_probe set name = ? where id >= ?', ['n', 2])).toBe(2);
          expect(await queryRows(tx, 'select count(*)::int as n from sql_probe where name = ?', ['n'])).toEqual([{ n: 2 }]);
        });
        expect(await queryRun(em, 'delete from sql_probe where id = ?', [7])).toBe(0);
      } finally {
        await cleanup();
      }
    });
  });
}

describeSql('PGlite', async () => {
  const db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
  return { db, cleanup: () => db.close() };
});

describe.skipIf(!(await servicesAvailable()))('PostgreSQL', () => {
  const open = async () => {
    const target = randomDatabaseTarget();
    const db = await openTestDatabase(target);
    return {
      db,
      cleanup: async () => {
        await db.close();
        await dropTestDatabase(target);
      },
    };
  };
  describeSql('PostgreSQL', open);

  it('sends the parameters as bind values, not inlined into the SQL text', async () => {
    const { db, cleanup } = await open();
    try {
      const [row] = await queryRows<{ query: string; v: string }>(db.fork(), 'select query, ?::text as v from pg_stat_activity where pid = pg_backend_pid()', ['inlined?']);
      expect(row?.v).toBe('inlined?');
      expect(row?.query).toContain('$1');
      expect(row?.query).not.toContain('inlined?');
    } finally {
      await cleanup();
    }
  });
});
