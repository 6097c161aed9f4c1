import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { ParsedEvent } from '@tributary/contracts';
import { coreMigrations } from '../src/db/migrations.ts';
import { openDatabase, type Database } from '../src/db/index.ts';
import { EventConsumer, type EventConsumerHandler, type EventConsumerSettings, type HandlerContext } from '../src/events/consumer.ts';
import { pruneInbox } from '../src/events/inbox-retention.ts';
import { MemoryEventLog } from '../src/events/log-memory.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { UnrecoverableError } from '../src/errors.ts';
import { waitFor } from '../src/testing/services.ts';
import { effectMigrations, effectStats, recordEffect, wireEvent } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

/** `n` events published in batches of 50, as a relay would. */
async function publishMany(transport: InMemoryTransport, n: number, overrides: Record<string, unknown> = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, () => wireEvent(overrides));
    ids.push(...batch.map((m) => m.messageId));
    await transport.publish(batch);
  }
  return ids;
}

describe('a consumer that starts from the event log', { timeout: 60_000 }, () => {
  const open: { consumers: EventConsumer[]; transport?: InMemoryTransport; db?: Database } = { consumers: [] };
  afterEach(async () => {
    for (const c of open.consumers) await c.stop();
    open.consumers = [];
    await open.transport?.close();
    await open.db?.close();
  });

  async function world(options: { log?: boolean } = {}) {
    const transport = new InMemoryTransport(`h_${randomUUID().slice(0, 8)}`, options.log === false ? undefined : new MemoryEventLog());
    await transport.start();
    const db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], migrations: [...coreMigrations, ...effectMigrations], logger: silent });
    Object.assign(open, { transport, db });
    /** Handler calls per event id, committed or not. */
    const calls = new Map<string, number>();
    const counting = async (event: ParsedEvent, context: HandlerContext) => {
      calls.set(event.id, (calls.get(event.id) ?? 0) + 1);
      await recordEffect(event, context);
    };
    const consumer = (settings: Partial<EventConsumerSettings> & Partial<EventConsumerHandler> = {}) => {
      const { handler, batchHandler, stagedHandler, ...rest } = settings;
      const handles: EventConsumerHandler = batchHandler ? { batchHandler } : stagedHandler ? { stagedHandler } : { handler: handler ?? counting };
      const c = new EventConsumer({ service: 'test', name: 'late', types: ['document.uploaded'], db, transport, logger: silent, retryDelaysMs: [20], startFrom: 'beginning', ...rest, ...handles });
      open.consumers.push(c);
      return c;
    };
    const inboxRows = async () => Number((await db.fork().execute<{ n: string }[]>('select count(*) as n from tributary_inbox'))[0]!.n);
    const checkpoint = async () => (await db.fork().execute<{ last_offset: string | null; done: boolean }[]>('select last_offset, done from tributary_log_checkpoint'))[0];
    return { transport, db, calls, counting, consumer, inboxRows, checkpoint };
  }

  it('applies 500 events published before it existed, then those published while it catches up, each exactly once', async () => {
    const w = await world();
    const before = await publishMany(w.transport, 500);
    const consumer = w.consumer();
    await consumer.start();
    // Published while the history is read: some land in the log before the read's end, all in the queue.
    const during = await publishMany(w.transport, 200);
    await consumer.caughtUp();
    const after = await publishMany(w.transport, 50);
    const all = [...before, ...during, ...after];
    await waitFor(async () => (await effectStats(w.db)).rows >= all.length, 20_000, 'every event applied');
    await waitFor(async () => (await w.transport.queueDepth(consumer.queue)) === 0, 10_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 200));
    expect(await effectStats(w.db)).toEqual({ rows: all.length, distinct: all.length });
    const applied = (await w.db.fork().execute<{ event_id: string }[]>('select event_id from test_effect')).map((r) => r.event_id).sort();
    expect(applied).toEqual([...all].sort());
    expect([...w.calls.values()].every((n) => n === 1)).toBe(true);
    expect(w.calls.size).toBe(all.length);
    expect(await w.inboxRows()).toBe(all.length);
    expect(await w.checkpoint()).toMatchObject({ done: true });
  });

  it('resumes from its checkpoint after a stop mid-history, applying nothing twice', async () => {
    const w = await world();
    const ids = await publishMany(w.transport, 1_000);
    let applied = 0;
    const slow = async (event: ParsedEvent, context: HandlerContext) => {
      await new Promise((r) => setTimeout(r, 1));
      await w.counting(event, context);
    };
    const first = w.consumer({ handler: slow, onApplied: (n) => (applied += n) });
    await first.start();
    await waitFor(() => applied >= 200, 20_000, 'part of the history applied');
    await first.stop();
    const stopped = await w.checkpoint();
    expect(stopped?.done).toBe(false);
    expect(Number(stopped?.last_offset)).toBeGreaterThan(0);
    const appliedBefore = (await effectStats(w.db)).rows;
    expect(appliedBefore).toBeLessThan(ids.length);
    // The inbox would drop a re-application anyway: count handler calls to see none was attempted.
    const callsBefore = [...w.calls.values()].reduce((a, b) => a + b, 0);
    const second = w.consumer();
    await second.start();
    await second.caughtUp();
    await waitFor(async () => (await effectStats(w.db)).rows === ids.length, 20_000, 'the rest applied');
    expect(await effectStats(w.db)).toEqual({ rows: ids.length, distinct: ids.length });
    expect([...w.calls.values()].reduce((a, b) => a + b, 0) - callsBefore).toBe(ids.length - appliedBefore);
    expect([...w.calls.values()].every((n) => n === 1)).toBe(true);
    expect(await w.checkpoint()).toMatchObject({ done: true });
  });

  it('tries again from its checkpoint when an event fails, and skips one its handler calls unrecoverable', async () => {
    const w = await world();
    const ids = await publishMany(w.transport, 300);
    const flaky = ids[150]!;
    const poison = ids[250]!;
    let failed = false;
    const consumer = w.consumer({
      handler: async (event, context) => {
        if (event.id === poison) throw new UnrecoverableError('BAD', 'never applies');
        if (event.id === flaky && !failed) {
          failed = true;
          throw new Error('database hiccup');
        }
        await w.counting(event, context);
      },
    });
    await consumer.start();
    await consumer.caughtUp();
    expect(failed).toBe(true);
    // Handler calls in a rolled-back batch count too: what took effect is what counts here.
    expect(await effectStats(w.db)).toEqual({ rows: ids.length - 1, distinct: ids.length - 1 });
    expect(w.calls.has(poison)).toBe(false);
  });

  it('skips history on later starts once caught up', async () => {
    const w = await world();
    const ids = await publishMany(w.transport, 100);
    const first = w.consumer();
    await first.start();
    await first.caughtUp();
    await first.stop();
    expect((await effectStats(w.db)).rows).toBe(ids.length);
    let calls = 0;
    const second = w.consumer({ handler: async () => void calls++ });
    await second.start();
    await second.caughtUp();
    expect(calls).toBe(0);
    expect(await w.inboxRows()).toBe(ids.length);
  });

  it("skips history events older than the consumer's inbox watermark (their rows were pruned)", async () => {
    const w = await world();
    const old = await publishMany(w.transport, 20, { time: new Date(Date.now() - 3_600_000).toISOString() });
    const recent = await publishMany(w.transport, 20);
    await w.db.fork().execute(`insert into tributary_inbox_watermark (consumer, pruned_before) values ('test.late', now() - interval '30 minutes')`);
    const consumer = w.consumer();
    await consumer.start();
    await consumer.caughtUp();
    expect(old.some((id) => w.calls.has(id))).toBe(false);
    expect(recent.every((id) => w.calls.get(id) === 1)).toBe(true);
  });

  it("replayed from the log's start after its inbox was pruned, applies nothing twice", async () => {
    const w = await world();
    // A consumer that has taken every event live (no history): 200 written 3 h ago, 50 now.
    const live = new EventConsumer({ service: 'test', name: 'late', types: ['document.uploaded'], db: w.db, transport: w.transport, logger: silent, handler: w.counting });
    await live.start();
    const old = await publishMany(w.transport, 200, { time: new Date(Date.now() - 3 * 3_600_000).toISOString() });
    const recent = await publishMany(w.transport, 50);
    await waitFor(() => w.calls.size === 250, 10_000, 'every event applied live');
    await live.stop();
    // The retention (1 h) prunes the 200 old rows and raises the watermark.
    expect((await pruneInbox(w.db, 'test.late', 3_600_000)).deleted).toBe(200);
    expect(await w.inboxRows()).toBe(50);
    // The same consumer now reads the log from its start (a deploy that adds startFrom).
    const replay = w.consumer({ startFrom: 'beginning' });
    await replay.start();
    await replay.caughtUp();
    expect([...old, ...recent].every((id) => w.calls.get(id) === 1)).toBe(true);
    expect(await effectStats(w.db)).toEqual({ rows: 250, distinct: 250 });
  });

  it('refuses to start from history without an event log (EVENT_LOG_DISABLED)', async () => {
    const w = await world({ log: false });
    await expect(w.consumer().start()).rejects.toMatchObject({ code: 'EVENT_LOG_DISABLED' });
  });

  it('refuses to start a staged handler from history (HISTORY_UNSUPPORTED)', async () => {
    const w = await world();
    await expect(w.consumer({ stagedHandler: async () => {} }).start()).rejects.toMatchObject({ code: 'HISTORY_UNSUPPORTED' });
  });
});
