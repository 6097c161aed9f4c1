import type { EntitySchema, MigrationObject } from '@mikro-orm/core';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { dropDatabase, openDatabase, type Database, type DatabaseTarget } from '../db/index.ts';
import { createLogger } from '../log.ts';
import { TEST_DATABASE_URL } from './services.ts';

/** The database of `service` in a test or benchmark run's `namespace`: `tributary_<namespace>_<service>`. */
export function namespacedDatabaseName(namespace: string, service: string): string {
  return `tributary_${namespace}_${service}`;
}

/** The URL of {@link namespacedDatabaseName}'s database on the PostgreSQL server at `serverUrl`. */
export function namespacedDatabaseUrl(serverUrl: string, namespace: string, service: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${namespacedDatabaseName(namespace, service)}`;
  return url.toString();
}

/** `<SERVICE>_DATABASE_URL` for each of `services`: its own database of the run on `serverUrl`. */
export function namespacedDatabaseEnv(serverUrl: string, namespace: string, services: readonly string[]): Record<string, string> {
  return Object.fromEntries(services.map((service) => [`${service.toUpperCase()}_DATABASE_URL`, namespacedDatabaseUrl(serverUrl, namespace, service)]));
}

/** A fresh, randomly named PostgreSQL database target on the test server. */
export function randomDatabaseTarget(prefix = 'tributary_test'): DatabaseTarget & { kind: 'postgres' } {
  return { kind: 'postgres', url: TEST_DATABASE_URL, dbName: `${prefix}_${randomBytes(6).toString('hex')}` };
}

/** Open a migrated database on a target (several handles on one target act like several processes). */
export function openTestDatabase(
  target: DatabaseTarget,
  options: { entities?: EntitySchema<any, any>[]; migrations?: MigrationObject[]; logger?: Logger; poolSize?: number } = {},
): Promise<Database> {
  return openDatabase({
    service: 'test',
    target,
    entities: options.entities ?? [],
    migrations: options.migrations ?? [],
    logger: options.logger ?? createLogger({ service: 'test', level: 'silent' }),
    ...(options.poolSize ? { poolSize: options.poolSize } : {}),
  });
}

export async function dropTestDatabase(target: DatabaseTarget): Promise<void> {
  if (target.kind === 'postgres') await dropDatabase(target.url, target.dbName);
}
