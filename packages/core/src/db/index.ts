import { PGlite } from '@electric-sql/pglite';
import type { AnyEntity, EntitySchema, MigrationObject } from '@mikro-orm/core';
import { Migrator } from '@mikro-orm/migrations';
import { MikroORM, PostgreSqlDriver, type EntityManager } from '@mikro-orm/postgresql';
import { PGliteDriver } from 'mikro-orm-pglite';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { CoreErrorCode, TributaryError, errorMessage } from '../errors.ts';
import { InboxEntry, OutboxMessage } from './entities.ts';
import { coreMigrations } from './migrations.ts';

export { InboxEntry, OutboxMessage, OUTBOX_CHANNEL } from './entities.ts';
export { coreMigrations, Migration } from './migrations.ts';
export { queryRows, queryRun, valuesPlaceholders } from './sql.ts';
export { listenChannel } from './listen.ts';
export type { EntityManager } from '@mikro-orm/postgresql';
export { MikroORM } from '@mikro-orm/postgresql';

/** Where a service's data lives: a PostgreSQL database, or an embedded PGlite one. */
export type DatabaseTarget =
  | { kind: 'postgres'; url: string; dbName: string }
  | { kind: 'pglite'; dataDir: string };

/**
 * Resolve a service's database from configuration: `<SERVICE>_DATABASE_URL` names the database
 * itself; `DATABASE_URL` names a server, on which the service uses `tributary_<service>`;
 * neither → PGlite under `TRIBUTARY_DATA_DIR/<service>` (`memory://` for none).
 */
export function databaseTarget(service: string, env: { DATABASE_URL?: string | undefined; TRIBUTARY_DATA_DIR?: string | undefined; [key: string]: string | undefined }): DatabaseTarget {
  const own = env[`${service.toUpperCase()}_DATABASE_URL`];
  if (own) {
    const dbName = decodeURIComponent(new URL(own).pathname.replace(/^\//, '')) || `tributary_${service}`;
    return { kind: 'postgres', url: own, dbName };
  }
  if (env.DATABASE_URL) return { kind: 'postgres', url: env.DATABASE_URL, dbName: `tributary_${service}` };
  const base = env.TRIBUTARY_DATA_DIR ?? './.tributary';
  return { kind: 'pglite', dataDir: base === 'memory://' ? 'memory://' : resolve(base, service) };
}

export interface DatabaseOptions {
  service: string;
  target: DatabaseTarget;
  entities: (EntitySchema<any, any> | AnyEntity)[];
  /** The service's own migrations, run after the core ones, in order. */
  migrations?: MigrationObject[];
  logger?: Logger;
  /** Connection pool size (PostgreSQL). Default 10. */
  poolSize?: number;
}

export interface Database {
  orm: MikroORM;
  target: DatabaseTarget;
  /** The embedded instance (PGlite only), for LISTEN/NOTIFY without a second connection. */
  pglite?: PGlite;
  /** A fresh EntityManager: one per request or message, never shared. */
  fork(): EntityManager;
  /** Whether the database answers (`/ready`). */
  ping(): Promise<boolean>;
  /**
   * A PostgreSQL connection of the caller's own, outside the pool: for work that must not queue
   * behind the pool's transactions (the outbox relay's batches, LISTEN, reads on a call's
   * critical path). Connected; an error it emits while idle ends it (attach a handler to learn
   * of it). The caller ends it; whatever is still open ends with {@link Database.close}.
   * @throws Error on PGlite, whose one session is the pool.
   */
  connect(): Promise<pg.Client>;
  close(): Promise<void>;
}

function adminUrl(url: string): string {
  const u = new URL(url);
  u.pathname = '/postgres';
  return u.toString();
}

function withDatabase(url: string, dbName: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(dbName)}`;
  return u.toString();
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** Create a PostgreSQL database unless it exists (safe when several services race to create it). */
export async function ensureDatabase(url: string, dbName: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(url) });
  await client.connect();
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [dbName]);
    if (found.rowCount === 0) {
      await client.query(`create database ${quoteIdent(dbName)}`).catch((error: { code?: string }) => {
        // 42P04 duplicate_database, 23505: another process created it between our check and now.
        if (error.code !== '42P04' && error.code !== '23505') throw error;
      });
    }
  } finally {
    await client.end();
  }
}

/** Drop a PostgreSQL database, closing its other sessions first (tests' clean-up). */
export async function dropDatabase(url: string, dbName: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(url) });
  await client.connect();
  try {
    await client.query(`drop database if exists ${quoteIdent(dbName)} with (force)`);
  } finally {
    await client.end();
  }
}

/** MikroORM's options for a service, whichever the driver. */
function ormOptions(options: DatabaseOptions) {
  return {
    entities: [OutboxMessage, InboxEntry, ...options.entities] as EntitySchema<any, any>[],
    extensions: [Migrator],
    migrations: { migrationsList: [...coreMigrations, ...(options.migrations ?? [])], tableName: 'tributary_migrations', transactional: true, allOrNothing: true, silent: true },
    discovery: { warnWhenNoEntities: false },
    // Services sharing a process (embedded mode) must never see each other's transaction
    // context, which MikroORM keeps in AsyncLocalStorage under this name.
    contextName: `tributary-${options.service}`,
    // Every unit of work must fork explicitly; the global EntityManager is a bug magnet.
    allowGlobalContext: false,
    debug: false,
  };
}

/** A PostgreSQL server's database (created if missing), migrated under an advisory lock so replicas starting together do not race. */
async function openPostgres(options: DatabaseOptions, target: Extract<DatabaseTarget, { kind: 'postgres' }>): Promise<MikroORM> {
  await ensureDatabase(target.url, target.dbName);
  const orm = await MikroORM.init({
    ...ormOptions(options),
    driver: PostgreSqlDriver,
    clientUrl: withDatabase(target.url, target.dbName),
    dbName: target.dbName,
    pool: { min: 0, max: options.poolSize ?? 10 },
  });
  const lockClient = new pg.Client({ connectionString: withDatabase(target.url, target.dbName) });
  await lockClient.connect();
  try {
    await lockClient.query("select pg_advisory_lock(hashtext('tributary_migrations'))");
    await orm.getMigrator().up();
  } finally {
    await lockClient.end();
  }
  return orm;
}

/** An embedded PGlite (in memory or under its data directory), migrated; one process holds it, so no lock. */
async function openPglite(options: DatabaseOptions, instance: PGlite): Promise<MikroORM> {
  // PGliteDriver extends the PostgreSQL driver; MikroORM's typings only know the built-in one.
  const orm = (await MikroORM.init({
    ...ormOptions(options),
    driver: PGliteDriver,
    dbName: 'postgres',
    driverOptions: { connection: { pglite: () => instance } },
  } as unknown as Parameters<typeof MikroORM.init>[0])) as MikroORM;
  await orm.getMigrator().up();
  return orm;
}

/**
 * Open a service's database and bring its schema up to date: core migrations (outbox, inbox)
 * then the service's own, under an advisory lock so replicas starting together do not race.
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const { target } = options;
  let orm: MikroORM;
  let pglite: PGlite | undefined;
  try {
    if (target.kind === 'postgres') {
      orm = await openPostgres(options, target);
    } else {
      if (target.dataDir !== 'memory://') mkdirSync(target.dataDir, { recursive: true });
      pglite = new PGlite(target.dataDir === 'memory://' ? undefined : target.dataDir);
      orm = await openPglite(options, pglite);
    }
  } catch (error) {
    await pglite?.close().catch(() => {});
    throw new TributaryError(CoreErrorCode.DATABASE_UNAVAILABLE, `could not open the ${options.service} database: ${errorMessage(error)}`, { cause: error });
  }
  return openedDatabase(options.service, target, orm, pglite);
}

/** The opened database: forks, ping, connections of the caller's own, and close (which ends those too). */
function openedDatabase(service: string, target: DatabaseTarget, orm: MikroORM, pglite: PGlite | undefined): Database {
  const ownClients = new Set<pg.Client>();
  const database: Database = {
    orm,
    target,
    fork: () => orm.em.fork() as EntityManager,
    ping: async () => {
      try {
        await orm.em.fork().getConnection().execute('select 1');
        return true;
      } catch {
        return false;
      }
    },
    connect: async () => {
      if (target.kind !== 'postgres') throw new Error(`the ${service} database is embedded (PGlite): it has no connection outside its one session`);
      const client = new pg.Client({ connectionString: withDatabase(target.url, target.dbName) });
      // Without a listener, an error on an idle connection would crash the process.
      client.on('error', () => client.end().catch(() => {}));
      client.once('end', () => ownClients.delete(client));
      ownClients.add(client);
      try {
        await client.connect();
      } catch (error) {
        ownClients.delete(client);
        throw error;
      }
      return client;
    },
    close: async () => {
      await Promise.all([...ownClients].map((client) => client.end().catch(() => {})));
      await orm.close(true);
      await pglite?.close().catch(() => {});
    },
  };
  if (pglite) database.pglite = pglite;
  return database;
}
