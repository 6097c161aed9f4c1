import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../src/db/index.ts';
import { queryRows, queryRun } from '../src/db/sql.ts';
import { EventConsumer } from '../src/events/consumer.ts';
import { beforeWatermark, InboxRetentionErrorCode, lockWatermark, pruneInbox, replayWatermark } from '../src/events/inbox-retention.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { registry } from '../src/metrics.ts';
import { watchTableRows } from '../src/metrics-tables.ts';
import { inboxConsumers } from '../src/retention.ts';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget } from '../src/testing/database.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { effectMigrations, effectStats, recordEffect, uploadedEvent } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

const HOUR = 3_600_000;
const CONSUMER = 'test.effects';

/** A serialized `document.uploaded` envelope whose `time` (its outbox write) is `ageMs` ago. */
function wireEvent(ageMs = 0, id: string = randomUUID()) {
  const e = uploadedEvent();
  const envelope = {
    id,
    type: e.type,
    source: 'test',
    specversion: '1.0',
    time: new Date(Date.now() - ageMs).toISOString(),
    dataschema: 'document.uploaded/v1',
    subject: e.subject,
    tenantid: 'tenant-a',
    data: e.data,
  };
  return { routingKey: 'document.uploaded', messageId: id, body: Buffer.from(JSON.stringify(envelope)) };
}

async function inboxCount(db: Database): Promise<number> {
  const [row] = await queryRows<{ n: string }>(db.fork(), 'select count(*) as n from tributary_inbox where consumer = ?', [CONSUMER]);
  return Number(row!.n);
}

describe.skipIf(!(await servicesAvailable()))('inbox retention', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  let transport: InMemoryTransport;
  let consumer: EventConsumer;
  let applied = 0;

  beforeEach(async () => {
    db = await openTestDatabase(target, { migrations: effectMigrations, logger: silent });
    transport = new InMemoryTransport(`ret_${randomUUID().slice(0, 8)}`);
    await transport.start();
    applied = 0;
    consumer = new EventConsumer({
      service: 'test',
      name: 'effects',
      types: ['document.uploaded'],
      db,
      transport,
      logger: silent,
      retryDelaysMs: [20],
      handler: recordEffect,
      onApplied: (n) => (applied += n),
    });
    await consumer.start();
  });
  afterEach(async () => {
    await consumer.stop();
    await transport.close();
    await db.close();
    await dropTestDatabase(target);
  });

  it("records each event's own time in the inbox", async () => {
    const event = wireEvent(5 * HOUR);
    await transport.publish([event]);
    await waitFor(() => applied === 1, 10_000, 'applied');
    const [row] = await queryRows<{ event_time: Date }>(db.fork(), 'select event_time from tributary_inbox where consumer = ?', [CONSUMER]);
    expect(new Date(row!.event_time).toISOString()).toBe(JSON.parse(event.body.toString()).time);
  });

  it('prunes rows older than the retention, raises the watermark monotonically, and replayWatermark returns it', async () => {
    expect(await replayWatermark(db.fork(), CONSUMER)).toBeUndefined();
    const old = Array.from({ length: 30 }, () => wireEvent(3 * HOUR));
    const recent = Array.from({ length: 20 }, () => wireEvent(0));
    await transport.publish([...old, ...recent]);
    await waitFor(() => applied === 50, 10_000, 'all applied');

    const before = Date.now();
    // Batches of 7: the loop must go round several times.
    const first = await pruneInbox(db, CONSUMER, 2 * HOUR, 7);
    expect(first.deleted).toBe(30);
    expect(await inboxCount(db)).toBe(20);
    // now − 2 h on the database's clock: the same host here, so within a few seconds of ours.
    expect(Math.abs(first.watermark.getTime() - (before - 2 * HOUR))).toBeLessThan(60_000);
    expect((await replayWatermark(db.fork(), CONSUMER))?.getTime()).toBe(first.watermark.getTime());

    // A longer retention later deletes nothing and never lowers the watermark.
    const second = await pruneInbox(db, CONSUMER, 48 * HOUR);
    expect(second).toEqual({ deleted: 0, watermark: first.watermark });
    expect((await replayWatermark(db.fork(), CONSUMER))?.getTime()).toBe(first.watermark.getTime());

    // What a log replay skips: the old events (applied, rows gone), not the recent ones (rows kept).
    const watermark = await replayWatermark(db.fork(), CONSUMER);
    for (const e of old) expect(beforeWatermark(JSON.parse(e.body.toString()).time, watermark)).toBe(true);
    for (const e of recent) expect(beforeWatermark(JSON.parse(e.body.toString()).time, watermark)).toBe(false);
    // Another consumer's watermark is its own.
    expect(await replayWatermark(db.fork(), 'test.other')).toBeUndefined();
  });

  it('still drops a duplicate delivered inside the retention after a prune', async () => {
    const kept = wireEvent(10 * 60_000);
    await transport.publish([kept, wireEvent(3 * HOUR)]);
    await waitFor(() => applied === 2, 10_000, 'applied');
    expect((await pruneInbox(db, CONSUMER, HOUR)).deleted).toBe(1);
    await transport.publish([kept]);
    await transport.publish([kept, kept]);
    await waitFor(async () => (await transport.queueDepth(consumer.queue)) === 0, 10_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 200));
    expect(applied).toBe(2);
    expect(await effectStats(db)).toEqual({ rows: 2, distinct: 2 });
  });

  it("makes a prune's watermark raise wait for a replay transaction holding the consumer's lock, which reads the watermark afresh", async () => {
    await expect(lockWatermark(db.fork(), CONSUMER)).rejects.toMatchObject({ code: InboxRetentionErrorCode.WATERMARK_NO_TRANSACTION });
    await pruneInbox(db, CONSUMER, 48 * HOUR);
    const first = await replayWatermark(db.fork(), CONSUMER);
    let pruned = false;
    let prune: Promise<unknown> | undefined;
    await db.fork().transactional(async (tx) => {
      expect((await lockWatermark(tx, CONSUMER))?.getTime()).toBe(first!.getTime());
      prune = pruneInbox(db, CONSUMER, HOUR).then(() => (pruned = true));
      await new Promise((r) => setTimeout(r, 500));
      // Still waiting for this transaction: the watermark this replay goes by cannot move under it.
      expect(pruned).toBe(false);
      expect((await replayWatermark(tx, CONSUMER))?.getTime()).toBe(first!.getTime());
    });
    await prune;
    const raised = await db.fork().transactional((tx) => lockWatermark(tx, CONSUMER));
    expect(raised!.getTime()).toBeGreaterThan(first!.getTime());
  });

  it("keeps a row an older process wrote without an event time for the whole retention", async () => {
    // A row as an old process wrote it: no event_time of its own, the column's default fills it.
    await queryRun(db.fork(), 'insert into tributary_inbox (consumer, event_id, type, processed_at) values (?, ?, ?, ?)', [CONSUMER, randomUUID(), 'document.uploaded', new Date()]);
    expect(await inboxCount(db)).toBe(1);
    expect((await pruneInbox(db, CONSUMER, HOUR)).deleted).toBe(0);
  });
});

describe('inbox retention on the embedded database (PGlite)', () => {
  it('prunes, raises the watermark, finds the consumers and reports the row counts', async () => {
    const db = await openTestDatabase({ kind: 'pglite', dataDir: 'memory://' }, { logger: silent });
    try {
      const em = db.fork();
      for (const [consumer, age] of [['a.one', '3 hours'], ['a.one', '0 hours'], ['b.two', '3 hours']] as const) {
        await queryRun(em, `insert into tributary_inbox (consumer, event_id, type, event_time) values (?, ?, 'x.y', now() - ?::interval)`, [consumer, randomUUID(), age]);
      }
      expect(await inboxConsumers(db.fork())).toEqual(['a.one', 'b.two']);
      expect((await pruneInbox(db, 'a.one', HOUR, 1)).deleted).toBe(1);
      expect(await replayWatermark(db.fork(), 'a.one')).toBeInstanceOf(Date);
      const unwatch = watchTableRows('embedded-test', db, ['tributary_inbox']);
      try {
        expect(await registry.getSingleMetricAsString('tributary_table_rows')).toMatch(/tributary_table_rows\{service="embedded-test",table="tributary_inbox"\} \d+/);
      } finally {
        unwatch();
      }
    } finally {
      await db.close();
    }
  });
});
