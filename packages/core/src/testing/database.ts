import type { EntitySchema, MigrationObject } from '@mikro-orm/core';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { dropDatabase, openDatabase, type Database, type DatabaseTarget } from '../db/index.ts';
import { createLogger } from '../log.ts';
import { TEST_DATABASE_URL } from './services.ts';

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
