import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/index.ts';
import { queryRows, queryRun } from '../src/db/sql.ts';
import { EventConsumer } from '../src/events/consumer.ts';
import { replayWatermark } from '../src/events/inbox-retention.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { registry } from '../src/metrics.ts';
import { rowsPruned } from '../src/metrics-tables.ts';
import { inboxConsumers, Pruner, startPruning } from '../src/retention.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { effectMigrations, effectStats, recordEffect, wireEvent as wireEnvelope } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

const HOUR = 3_600_000;
const CONSUMER = 'test.effects';

/** A serialized `document.uploaded` envelope whose `time` (its outbox write) is `ageMs` ago. */
function wireEvent(ageMs: number) {
  return wireEnvelope({ time: new Date(Date.now() - ageMs).toISOString() });
}

async function inboxCount(db: Database, consumer = CONSUMER): Promise<number> {
  const [row] = await queryRows<{ n: string }>(db.fork(), 'select count(*) as n from tributary_inbox where consumer = ?', [consumer]);
  return Number(row!.n);
}

async function prunedSoFar(table: string): Promise<number> {
  const { values } = await rowsPruned.get();
  return values.filter((v) => v.labels.table === table && v.labels.service === 'test').reduce((sum, v) => sum + v.value, 0);
}

describe.skipIf(!(await servicesAvailable()))('the service\'s prune schedule', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  let transport: InMemoryTransport;
  let consumer: EventConsumer;
  let applied = 0;
  let stops: (() => Promise<void>)[] = [];

  beforeEach(async () => {
    db = await openTestDatabase(target, { migrations: effectMigrations, logger: silent, poolSize: 4 });
    transport = new InMemoryTransport(`ret_${randomUUID().slice(0, 8)}`);
    await transport.start();
    applied = 0;
    stops = [];
    consumer = new EventConsumer({ service: 'test', name: 'effects', types: ['document.uploaded'], db, transport, logger: silent, handler: recordEffect, onApplied: (n) => (applied += n) });
    await consumer.start();
  });
  afterEach(async () => {
    for (const stop of stops) await stop();
    await consumer.stop();
    await transport.close();
    await db.close();
    await dropTestDatabase(target);
  });

  it('keeps the inbox of a consumer that took 20,000 events to the events inside the retention, each applied once, duplicates inside it still dropped', async () => {
    const prunedBefore = await prunedSoFar('tributary_inbox');
    // 1 h retention; 19,000 events older than it (a backlog, or the same as waiting an hour), 1,000 inside it.
    const stop = startPruning({ service: 'test', db, pruneDb: db, logger: silent, config: { INBOX_RETENTION_HOURS: 1 }, intervalMs: 50 });
    stops.push(stop);
    const recent: ReturnType<typeof wireEvent>[] = [];
    for (let chunk = 0; chunk < 20; chunk++) {
      const events = Array.from({ length: 1_000 }, (_, i) => (i % 20 === 0 ? wireEvent(0) : wireEvent(3 * HOUR)));
      recent.push(...events.filter((_, i) => i % 20 === 0));
      await transport.publish(events);
    }
    await waitFor(() => applied === 20_000, 120_000, '20,000 applied');
    // The bound: the inbox holds the events inside the retention (1,000 here), however many went through.
    await waitFor(async () => (await inboxCount(db)) === 1_000, 30_000, 'inbox pruned to the events inside the retention');
    expect(await effectStats(db)).toEqual({ rows: 20_000, distinct: 20_000 });
    expect((await prunedSoFar('tributary_inbox')) - prunedBefore).toBe(19_000);

    const watermark = await replayWatermark(db.fork(), CONSUMER);
    expect(watermark).toBeDefined();
    expect(Math.abs(watermark!.getTime() - (Date.now() - HOUR))).toBeLessThan(60_000);

    // Redelivered inside the retention (a lost ack, a broker redelivery): dropped by the rows kept.
    await transport.publish(recent.slice(0, 100));
    await waitFor(async () => (await transport.queueDepth(consumer.queue)) === 0, 10_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 200));
    expect(applied).toBe(20_000);
    expect(await effectStats(db)).toEqual({ rows: 20_000, distinct: 20_000 });

    // The per-event tables' row counts are on /metrics.
    const text = await registry.getSingleMetricAsString('tributary_table_rows');
    for (const table of ['tributary_inbox', 'tributary_outbox', 'tributary_idempotency']) expect(text).toMatch(new RegExp(`tributary_table_rows\\{service="test",table="${table}"\\} \\d+`));
  });

  it('prunes idempotency keys past their TTL and the inbox of a consumer no longer in the code', async () => {
    const stop = startPruning({ service: 'test', db, pruneDb: db, logger: silent, config: { INBOX_RETENTION_HOURS: 1, IDEMPOTENCY_KEY_TTL_HOURS: 1 }, intervalMs: 200 });
    stops.push(stop);
    const em = db.fork();
    await queryRun(em, `insert into tributary_idempotency (scope, key, request_hash, created_at) values ('s', 'old', 'h', now() - interval '2 hours'), ('s', 'new', 'h', now())`);
    await queryRun(em, `insert into tributary_inbox (consumer, event_id, type, event_time) values ('gone.consumer', ?, 'x.y', now() - interval '2 hours'), ('gone.consumer', ?, 'x.y', now())`, [randomUUID(), randomUUID()]);
    await transport.publish([wireEvent(0)]);
    await waitFor(() => applied === 1, 10_000, 'applied');
    expect(await inboxConsumers(db.fork())).toEqual(['gone.consumer', CONSUMER]);
    await waitFor(async () => (await inboxCount(db, 'gone.consumer')) === 1, 10_000, 'a round');
    await waitFor(async () => (await queryRows(db.fork(), 'select key from tributary_idempotency')).length === 1, 10_000, 'keys pruned');
    expect(await queryRows(db.fork(), 'select key from tributary_idempotency')).toEqual([{ key: 'new' }]);
    expect(await inboxCount(db)).toBe(1);
  });

  it('logs a failing prune and runs the other tasks and the next round anyway', async () => {
    const warnings: string[] = [];
    const logger = { ...silent, warn: (_: unknown, message: string) => void warnings.push(message), debug: () => {} } as unknown as typeof silent;
    let ran = 0;
    const pruner = new Pruner({
      service: 'test',
      logger,
      intervalMs: 60_000,
      tasks: [
        { table: 'broken', prune: () => Promise.reject(new Error('relation does not exist')) },
        { table: 'fine', prune: async () => ++ran },
      ],
    });
    await pruner.runOnce();
    await pruner.runOnce();
    expect(ran).toBe(2);
    expect(warnings).toEqual(['prune failed; retried next round', 'prune failed; retried next round']);
    await pruner.stop();
  });
});
