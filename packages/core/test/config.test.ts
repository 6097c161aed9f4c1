import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { baseConfigSchema, ConfigError, eventBusKind, eventBusUrl, loadConfig } from '../src/config.ts';
import { databaseTarget } from '../src/db/index.ts';

describe('configuration', () => {
  it('applies defaults when nothing is set', () => {
    const config = loadConfig(baseConfigSchema, {});
    expect(config).toMatchObject({ NODE_ENV: 'development', LOG_LEVEL: 'info', TRIBUTARY_NAMESPACE: 'tributary', TRIBUTARY_DATA_DIR: './.tributary' });
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.AMQP_URL).toBeUndefined();
  });

  it('reports every invalid key at once', () => {
    let error: unknown;
    try {
      loadConfig(baseConfigSchema, { DATABASE_URL: 'mysql://x', AMQP_URL: 'not a url', LOG_LEVEL: 'loud', PORT: '99999', TRIBUTARY_NAMESPACE: 'Has Spaces' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const { issues, code } = error as ConfigError;
    expect(code).toBe('CONFIG_INVALID');
    expect(issues.map((i) => i.key).sort()).toEqual(['AMQP_URL', 'DATABASE_URL', 'LOG_LEVEL', 'PORT', 'TRIBUTARY_NAMESPACE']);
  });

  it('treats empty strings as unset', () => {
    expect(loadConfig(baseConfigSchema, { DATABASE_URL: '', PORT: '' }).DATABASE_URL).toBeUndefined();
  });

  it('makes a setting without a safe default required in a service schema', () => {
    const schema = baseConfigSchema.extend({ INTERNAL_SIGNING_SECRET: z.string().min(32) });
    expect(() => loadConfig(schema, {})).toThrow(/INTERNAL_SIGNING_SECRET/);
  });
});

describe('database target', () => {
  it('uses tributary_<service> on the server named by DATABASE_URL', () => {
    expect(databaseTarget('documents', { DATABASE_URL: 'postgres://u@db:5432/postgres' })).toEqual({ kind: 'postgres', url: 'postgres://u@db:5432/postgres', dbName: 'tributary_documents' });
  });

  it('lets <SERVICE>_DATABASE_URL name the database itself', () => {
    expect(databaseTarget('jobs', { DATABASE_URL: 'postgres://a/x', JOBS_DATABASE_URL: 'postgres://b:5433/jobs_prod' })).toEqual({ kind: 'postgres', url: 'postgres://b:5433/jobs_prod', dbName: 'jobs_prod' });
  });

  it('falls back to PGlite under the data directory, or in memory', () => {
    expect(databaseTarget('insights', { TRIBUTARY_DATA_DIR: '/var/lib/t' })).toEqual({ kind: 'pglite', dataDir: '/var/lib/t/insights' });
    expect(databaseTarget('insights', { TRIBUTARY_DATA_DIR: 'memory://' })).toEqual({ kind: 'pglite', dataDir: 'memory://' });
  });
});

describe('event bus URL', () => {
  it('names the broker by its scheme, and refuses any other', () => {
    expect(eventBusKind(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'amqps://u:p@mq:5671/vh' }).EVENT_BUS_URL!)).toBe('rabbitmq');
    expect(eventBusKind(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'redis://:secret@cache:6379/2' }).EVENT_BUS_URL!)).toBe('redis');
    expect(eventBusKind(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'nats://nats:4222' }).EVENT_BUS_URL!)).toBe('nats');
    expect(() => loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'kafka://k:9092' })).toThrow(/EVENT_BUS_URL: must be a amqp or amqps or redis or rediss or nats or tls URL/);
  });

  it('falls back to AMQP_URL, and refuses the two set to different brokers', () => {
    expect(eventBusUrl(loadConfig(baseConfigSchema, { AMQP_URL: 'amqp://mq' }))).toBe('amqp://mq');
    expect(eventBusUrl(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'redis://r', AMQP_URL: '' }))).toBe('redis://r');
    expect(eventBusUrl(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'amqp://mq', AMQP_URL: 'amqp://mq' }))).toBe('amqp://mq');
    expect(eventBusUrl(loadConfig(baseConfigSchema, {}))).toBeUndefined();
    let error: unknown;
    try {
      eventBusUrl(loadConfig(baseConfigSchema, { EVENT_BUS_URL: 'nats://n', AMQP_URL: 'amqp://mq' }));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toEqual([{ key: 'EVENT_BUS_URL', message: expect.stringMatching(/both set/) }]);
  });
});
