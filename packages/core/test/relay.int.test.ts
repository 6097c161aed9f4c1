import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { publish } from '../src/events/publish.ts';
import { OutboxRelay } from '../src/events/relay.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { unsentCount, uploadedEvent } from './fixtures/effects.ts';
import { Harness, silent } from './fixtures/harness.ts';

describe.skipIf(!(await servicesAvailable()))('outbox relay', () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(async () => {
    await h.cleanup();
  });

  it('three relays over 10,000 rows deliver every event, including rows committed out of id order', async () => {
    const writer = await h.db();
    const observerTransport = await h.transport('observer');
    const observer = await h.observe(observerTransport, ['document.uploaded']);

    // A transaction that takes its ids first and commits last: a cursor-based relay skips it.
    const late: string[] = [];
    let releaseLate!: () => void;
    const lateGate = new Promise<void>((resolve) => (releaseLate = resolve));
    let lateInserted!: () => void;
    const lateReady = new Promise<void>((resolve) => (lateInserted = resolve));
    const lateTx = writer.fork().transactional(async (em) => {
      const envelopes = await publish(em, 'test', Array.from({ length: 10 }, () => uploadedEvent()));
      late.push(...envelopes.map((e) => e.id));
      lateInserted();
      await lateGate;
    });
    await lateReady;

    const relays = await Promise.all(
      [1, 2, 3].map(async (n) => new OutboxRelay({ db: await h.db(), transport: await h.transport(`relay${n}`), logger: silent, batchSize: 200, pollIntervalMs: 100 })),
    );
    for (const relay of relays) await relay.start();

    const expected = new Set<string>(late);
    for (let batch = 0; batch < 50; batch++) {
      const envelopes = await writer.fork().transactional((em) => publish(em, 'test', Array.from({ length: 200 }, () => uploadedEvent())));
      for (const e of envelopes) expected.add(e.id);
    }
    await waitFor(() => new Set(observer.deliveries.map((d) => d.messageId)).size >= 10_000, 60_000, 'the 10,000 early-committed events');
    releaseLate();
    await lateTx;
    await waitFor(() => new Set(observer.deliveries.map((d) => d.messageId)).size === expected.size, 30_000, 'every event');

    const seen = new Set(observer.deliveries.map((d) => d.messageId));
    for (const id of late) expect(seen.has(id)).toBe(true);
    expect(seen).toEqual(expected);
    expect(await unsentCount(writer)).toBe(0);
    // Work was shared, and SKIP LOCKED kept relays from publishing the same rows.
    expect(relays.filter((r) => r.publishedCount > 0).length).toBeGreaterThan(1);
    expect(relays.reduce((sum, r) => sum + r.publishedCount, 0)).toBe(expected.size);
    for (const relay of relays) await relay.stop();
  });

  it('with no retention, three relays share 3,000 rows, each published once, and leave the table empty', async () => {
    const writer = await h.db();
    const observer = await h.observe(await h.transport('observer'), ['document.uploaded']);
    let releaseLate!: () => void;
    const lateGate = new Promise<void>((resolve) => (releaseLate = resolve));
    let lateInserted!: () => void;
    const lateReady = new Promise<void>((resolve) => (lateInserted = resolve));
    const expected = new Set<string>();
    const lateTx = writer.fork().transactional(async (em) => {
      for (const e of await publish(em, 'test', Array.from({ length: 10 }, () => uploadedEvent()))) expected.add(e.id);
      lateInserted();
      await lateGate;
    });
    await lateReady;
    const relays = await Promise.all(
      [1, 2, 3].map(async (n) => new OutboxRelay({ db: await h.db(), transport: await h.transport(`relay${n}`), logger: silent, batchSize: 100, pollIntervalMs: 100, retainSentMs: 0 })),
    );
    for (const relay of relays) await relay.start();
    for (let batch = 0; batch < 30; batch++) {
      const envelopes = await writer.fork().transactional((em) => publish(em, 'test', Array.from({ length: 100 }, () => uploadedEvent())));
      for (const e of envelopes) expected.add(e.id);
    }
    await waitFor(() => observer.deliveries.length >= 3_000, 60_000, 'the 3,000 early-committed events');
    releaseLate();
    await lateTx;
    await waitFor(() => observer.deliveries.length >= expected.size, 30_000, 'every event');
    await new Promise((r) => setTimeout(r, 300));
    expect(observer.deliveries).toHaveLength(expected.size);
    expect(new Set(observer.deliveries.map((d) => d.messageId))).toEqual(expected);
    expect(relays.filter((r) => r.publishedCount > 0).length).toBeGreaterThan(1);
    expect(relays.reduce((sum, r) => sum + r.publishedCount, 0)).toBe(expected.size);
    const [row] = await writer.fork().execute<{ n: string }[]>('select count(*) as n from tributary_outbox');
    expect(Number(row!.n)).toBe(0);
    for (const relay of relays) await relay.stop();
  });

  it('keeps rows unsent while the broker is unreachable and publishes them when it is back', async () => {
    const db = await h.db();
    const transport = await h.transport('relay');
    const observer = await h.observe(await h.transport('observer'), ['document.uploaded']);
    const relay = new OutboxRelay({ db, transport, logger: silent, pollIntervalMs: 50, retryDelayMs: 50 });
    await transport.close(); // publishing now fails with TRANSPORT_CLOSED
    await db.fork().transactional((em) => publish(em, 'test', [uploadedEvent()]));
    await expect(relay.publishBatch()).rejects.toMatchObject({ code: 'TRANSPORT_CLOSED' });
    expect(await unsentCount(db)).toBe(1);

    const healthy = new OutboxRelay({ db, transport: await h.transport('relay2'), logger: silent });
    expect(await healthy.flush()).toBe(1);
    await waitFor(() => observer.deliveries.length === 1, 5_000, 'the event');
  });
});
