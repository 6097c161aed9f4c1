import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { contextFromTraceparent, runInContext } from '../src/context.ts';
import { publish } from '../src/events/publish.ts';
import { OutboxRelay } from '../src/events/relay.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { unsentCount, uploadedEvent } from './fixtures/effects.ts';
import { Harness, silent } from './fixtures/harness.ts';
import type { Database } from '../src/db/index.ts';

async function outboxCount(db: Database): Promise<number> {
  const [row] = await db.fork().execute<{ n: string }[]>('select count(*) as n from tributary_outbox');
  return Number(row!.n);
}

describe.skipIf(!(await servicesAvailable()))('transactional outbox', () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(async () => {
    await h.cleanup();
  });

  it('leaves neither a row nor a message when the transaction throws after publish()', async () => {
    const db = await h.db();
    const transport = await h.transport();
    const observer = await h.observe(transport, ['document.uploaded']);
    const relay = new OutboxRelay({ db, transport, logger: silent, pollIntervalMs: 50 });
    await relay.start();

    await expect(
      db.fork().transactional(async (em) => {
        await publish(em, 'test', [uploadedEvent()]);
        throw new Error('the write that goes with the event failed');
      }),
    ).rejects.toThrow('the write that goes with the event failed');
    const committed = uploadedEvent();
    await db.fork().transactional((em) => publish(em, 'test', [committed]));

    await waitFor(() => observer.deliveries.length === 1, 10_000, 'the committed event');
    await new Promise((r) => setTimeout(r, 300));
    expect(observer.deliveries).toHaveLength(1);
    expect(JSON.parse(observer.deliveries[0]!.body.toString()).data.documentId).toBe(committed.data.documentId);
    const [row] = await db.fork().execute<{ n: string }[]>('select count(*) as n from tributary_outbox');
    expect(Number(row!.n)).toBe(1);
    await relay.stop();
  });

  it('continues the trace and tenant of the event named by causedBy, not the current one', async () => {
    const db = await h.db();
    const cause = { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tenantid: 'tenant-of-the-cause' };
    const current = contextFromTraceparent('00-11111111111111111111111111111111-2222222222222222-01', 'tenant-of-the-batch');
    // No tenant of their own: each takes it from where it comes from.
    const untenanted = () => {
      const { tenantId: _, ...event } = uploadedEvent();
      return event;
    };
    const [caused, plain] = await runInContext(current, () =>
      db.fork().transactional(async (em) => publish(em, 'test', [{ ...untenanted(), causedBy: cause }, untenanted()])),
    );
    expect(caused!.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(caused!.tenantid).toBe('tenant-of-the-cause');
    expect(plain!.traceparent).toMatch(/^00-11111111111111111111111111111111-/);
    expect(plain!.tenantid).toBe('tenant-of-the-batch');
  });

  it('refuses to publish outside a transaction, with a code', async () => {
    const db = await h.db();
    await expect(publish(db.fork(), 'test', [uploadedEvent()])).rejects.toMatchObject({ code: 'OUTBOX_NO_TRANSACTION' });
  });

  it('refuses data that breaks the contract and writes nothing', async () => {
    const db = await h.db();
    const bad = uploadedEvent();
    (bad.data as { text: string }).text = '';
    await expect(db.fork().transactional((em) => publish(em, 'test', [bad]))).rejects.toMatchObject({ code: 'INVALID_DATA' });
    expect(await unsentCount(db)).toBe(0);
  });

  it('publishes rows committed while no relay ran, once a relay starts', async () => {
    const db = await h.db();
    const transport = await h.transport();
    const observer = await h.observe(transport, ['document.uploaded']);
    const events = Array.from({ length: 20 }, () => uploadedEvent());
    await db.fork().transactional((em) => publish(em, 'test', events));
    expect(await unsentCount(db)).toBe(20);

    await h.spawn('relay');
    await waitFor(() => observer.deliveries.length === 20, 15_000, '20 events');
    await waitFor(async () => (await unsentCount(db)) === 0, 5_000, 'rows marked sent');
    await new Promise((r) => setTimeout(r, 300));
    expect(observer.deliveries).toHaveLength(20);
  });

  // The same crash with retention (rows marked sent) and without (rows deleted): either way the
  // change to the rows commits only after the confirm, so a relay killed in between leaves them.
  it.each([
    [
      'publishes again after a relay is killed between the broker confirm and marking rows sent',
      {
        env: {},
        left: unsentCount,
        first: 'the first (unmarked) publication',
        settled: 'rows marked sent after restart',
      },
    ],
    [
      'with no retention, deletes rows only once the broker confirmed them: a relay killed after the confirm leaves them to publish again',
      {
        env: { RELAY_RETAIN_SENT_MS: '0' },
        left: outboxCount,
        first: 'the first (undeleted) publication',
        settled: 'rows deleted after restart',
      },
    ],
  ] as const)('%s', async (_title, { env, left, first, settled }) => {
    const db = await h.db();
    const transport = await h.transport();
    const observer = await h.observe(transport, ['document.uploaded']);
    const envelopes = await db.fork().transactional((em) => publish(em, 'test', Array.from({ length: 5 }, () => uploadedEvent())));

    const doomed = await h.spawn('relay', { KILL_AT: 'after-publish', ...env }).catch((e: Error) => e);
    // It may die before or after saying ready; either way it died after the confirm.
    if (!(doomed instanceof Error)) await new Promise<void>((resolve) => doomed.once('exit', () => resolve()));
    await waitFor(() => observer.deliveries.length >= 5, 10_000, first);
    expect(await left(db)).toBe(5);

    await h.spawn('relay', env);
    await waitFor(async () => (await left(db)) === 0, 15_000, settled);
    await waitFor(() => observer.deliveries.length === 10, 5_000, 'the second publication');
    // At least once: every event went out twice, and the consumers' inbox absorbs the copy.
    const counts = new Map<string | undefined, number>();
    for (const d of observer.deliveries) counts.set(d.messageId, (counts.get(d.messageId) ?? 0) + 1);
    expect(new Map(envelopes.map((e) => [e.id, 2]))).toEqual(counts);
  });

  it('with no retention, keeps rows whose publish failed and deletes them once published', async () => {
    const db = await h.db();
    const transport = await h.transport('relay');
    const observer = await h.observe(await h.transport('observer'), ['document.uploaded']);
    const relay = new OutboxRelay({ db, transport, logger: silent, retainSentMs: 0 });
    await transport.close();
    await db.fork().transactional((em) => publish(em, 'test', [uploadedEvent(), uploadedEvent(), uploadedEvent()]));
    await expect(relay.publishBatch()).rejects.toMatchObject({ code: 'TRANSPORT_CLOSED' });
    expect(await outboxCount(db)).toBe(3);

    const healthy = new OutboxRelay({ db, transport: await h.transport('relay2'), logger: silent, retainSentMs: 0 });
    expect(await healthy.flush()).toBe(3);
    expect(await outboxCount(db)).toBe(0);
    await waitFor(() => observer.deliveries.length === 3, 5_000, 'the events');
    expect(await healthy.prune()).toBe(0);
  });

  it('prunes rows sent longer ago than the retention', async () => {
    const db = await h.db();
    const transport = await h.transport();
    await h.observe(transport, ['document.uploaded']);
    const relay = new OutboxRelay({ db, transport, logger: silent, retainSentMs: 1 });
    await db.fork().transactional((em) => publish(em, 'test', [uploadedEvent(), uploadedEvent()]));
    expect(await relay.flush()).toBe(2);
    await new Promise((r) => setTimeout(r, 20));
    expect(await relay.prune()).toBe(2);
  });
});
