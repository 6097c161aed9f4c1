import { describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/index.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { silent } from './fixtures/harness.ts';

describe.skipIf(!(await servicesAvailable()))('Database.connect (PostgreSQL)', () => {
  it('answers while every pooled connection is held, and what is still open ends with the database', async () => {
    const target = randomDatabaseTarget();
    const db = await openTestDatabase(target, { poolSize: 1 });
    try {
      let release!: () => void;
      const held = db.fork().transactional(async (em) => {
        await em.getConnection().execute('select 1', [], 'all', em.getTransactionContext());
        await new Promise<void>((resolve) => (release = resolve));
      });
      await waitFor(() => release !== undefined, 5_000, 'the pool held');

      const own = await db.connect();
      const ended = new Promise<void>((resolve) => own.once('end', resolve));
      expect((await own.query<{ db: string }>('select current_database() as db')).rows[0]!.db).toBe(target.dbName);
      // Ended by the caller: the database has nothing left to end for it.
      const other = await db.connect();
      await other.end();

      release();
      await held;
      await db.close();
      await ended;
      await expect(own.query('select 1')).rejects.toThrow();
    } finally {
      await db.close().catch(() => {});
      await dropTestDatabase(target);
    }
  });

  it('ends a connection the server closes, with no error left unhandled', async () => {
    const target = randomDatabaseTarget();
    const db = await openTestDatabase(target);
    try {
      const own = await db.connect();
      const ended = new Promise<void>((resolve) => own.once('end', resolve));
      const [{ pid }] = (await own.query<{ pid: number }>('select pg_backend_pid() as pid')).rows as [{ pid: number }];
      await db.fork().getConnection().execute('select pg_terminate_backend(?)', [pid]);
      await ended;
    } finally {
      await db.close();
      await dropTestDatabase(target);
    }
  });
});

describe('Database.connect (PGlite)', () => {
  it('is refused: the embedded database has one session, its pool', async () => {
    const db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
    try {
      await expect(db.connect()).rejects.toThrow(/embedded \(PGlite\)/);
    } finally {
      await db.close();
    }
  });
});
