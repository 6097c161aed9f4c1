import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONCURRENCY, DEFAULT_MAX_BATCH, DEFAULT_PREFETCH, EventConsumer, type EventConsumerHandler, type EventConsumerSettings } from '../src/events/consumer.ts';
import { publish } from '../src/events/publish.ts';
import { OutboxRelay } from '../src/events/relay.ts';
import { Headers } from '../src/events/transport.ts';
import { UnrecoverableError } from '../src/errors.ts';
import type { RabbitMqTransport } from '../src/events/rabbitmq.ts';
import { closeBrokerConnections, servicesAvailable, waitFor } from '../src/testing/services.ts';
import { effectStats, recordEffect, uploadedEvent, wireEvent } from './fixtures/effects.ts';
import { Harness, silent } from './fixtures/harness.ts';

describe.skipIf(!(await servicesAvailable()))('event consumer with inbox', () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(async () => {
    await h.cleanup();
  });

  async function consumer(transport: RabbitMqTransport, options: Partial<EventConsumerSettings> & Partial<EventConsumerHandler> = {}): Promise<EventConsumer> {
    const { handler, batchHandler, stagedHandler, ...settings } = options;
    const handles: EventConsumerHandler = batchHandler ? { batchHandler } : stagedHandler ? { stagedHandler } : { handler: handler ?? recordEffect };
    const c = new EventConsumer({
      service: 'test',
      name: 'effects',
      types: ['document.uploaded'],
      db: await h.db(),
      transport,
      logger: silent,
      retryDelaysMs: [50, 100],
      ...settings,
      ...handles,
    });
    h.queues.push({ queue: c.queue, retryDelaysMs: c.retryDelaysMs });
    await c.start();
    return c;
  }

  it('applies the same event delivered twice exactly once', async () => {
    const transport = await h.transport();
    let applied = 0;
    await consumer(transport, { onApplied: (n) => (applied += n) });
    const event = wireEvent();
    await transport.publish([event]);
    await waitFor(() => applied === 1, 10_000, 'first application');
    await transport.publish([event]);
    await transport.publish([event, event]);
    const db = await h.db();
    await waitFor(async () => (await transport.queueDepth(`${h.namespace}.test.effects`)) === 0, 10_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 300));
    expect(await effectStats(db)).toEqual({ rows: 1, distinct: 1 });
  });

  it("tells a handler's afterTransaction callbacks whether the transaction committed, once it has ended", async () => {
    const transport = await h.transport();
    const db = await h.db();
    const ended: { committed: boolean; rowsSeen: number }[] = [];
    let failFirst = true;
    await consumer(transport, {
      retryDelaysMs: [20],
      handler: async (event, context) => {
        await recordEffect(event, context);
        // Reads the effect from outside the transaction once it has ended: visible only if it committed.
        context.afterTransaction((committed) => {
          void effectStats(db).then(({ rows }) => ended.push({ committed, rowsSeen: rows }));
        });
        if (failFirst) {
          failFirst = false;
          throw new Error('rolled back on purpose');
        }
      },
    });
    await transport.publish([wireEvent()]);
    await waitFor(() => ended.length === 2, 10_000, 'both attempts ended');
    expect(ended).toEqual([
      { committed: false, rowsSeen: 0 },
      { committed: true, rowsSeen: 1 },
    ]);
  });

  it('acks an event `relevant` declines with no transaction and no inbox row, and applies the others', async () => {
    const transport = await h.transport();
    let applied = 0;
    const asked: string[] = [];
    let handled = 0;
    await consumer(transport, {
      handler: async (event, context) => {
        handled++;
        await recordEffect(event, context);
      },
      relevant: async (event, em) => {
        // It may read, outside any transaction.
        expect(em.isInTransaction()).toBe(false);
        await em.execute('select 1');
        asked.push(event.id);
        return event.tenantid !== 'tenant-quiet';
      },
      onApplied: (n) => (applied += n),
    });
    const events = Array.from({ length: 10 }, (_, i) => wireEvent(i % 2 === 0 ? { tenantid: 'tenant-quiet' } : {}));
    await transport.publish(events);
    await waitFor(() => applied === 5, 10_000, 'the 5 relevant events applied');
    await waitFor(async () => (await transport.queueDepth(`${h.namespace}.test.effects`)) === 0, 10_000, 'queue drained');
    await waitFor(() => asked.length === 10, 10_000, 'every event asked about');
    await new Promise((r) => setTimeout(r, 300));
    const db = await h.db();
    expect(handled).toBe(5);
    expect(await effectStats(db)).toEqual({ rows: 5, distinct: 5 });
    const [inbox] = await db.fork().execute<{ n: string }[]>('select count(*) as n from tributary_inbox');
    expect(Number(inbox!.n)).toBe(5);
  });

  it('retries an event whose `relevant` check throws, then applies it', async () => {
    const transport = await h.transport();
    let applied = 0;
    let calls = 0;
    await consumer(transport, {
      relevant: async () => {
        calls++;
        if (calls === 1) throw new Error('database unreachable');
        return true;
      },
      onApplied: (n) => (applied += n),
    });
    await transport.publish([wireEvent()]);
    await waitFor(() => applied === 1, 10_000, 'applied after the retry');
    expect(calls).toBe(2);
    expect(await effectStats(await h.db())).toEqual({ rows: 1, distinct: 1 });
  });

  it('applies a burst five times the production prefetch in multi-event batches within the batch limit, and each event once', async () => {
    const transport = await h.transport();
    const burst = 5 * DEFAULT_PREFETCH;
    const batches: number[] = [];
    let applied = 0;
    // As the services run it: the default prefetch, batch size and concurrency.
    await consumer(transport, {
      batchHandler: async (events, context) => {
        batches.push(events.length);
        for (const event of events) await recordEffect(event, context);
      },
      prefetch: DEFAULT_PREFETCH,
      maxBatch: DEFAULT_MAX_BATCH,
      concurrency: DEFAULT_CONCURRENCY,
      onApplied: (n) => (applied += n),
    });
    // One burst: ten publishes awaited one after another leave gaps in which the consumer may run
    // dry, and a delivery that finds nothing in flight is rightly started at once, alone.
    await transport.publish(Array.from({ length: burst }, () => wireEvent()));
    await waitFor(() => applied === burst, 30_000, `${burst} events applied`);
    expect(await effectStats(await h.db())).toEqual({ rows: burst, distinct: burst });
    expect(batches.reduce((a, b) => a + b, 0)).toBe(burst);
    expect(Math.max(...batches)).toBeLessThanOrEqual(DEFAULT_MAX_BATCH);
    // Beyond the prefetch the broker sends the rest only as batches are acked: when the consumer
    // has run dry before a refill arrives, the first delivery back is rightly started alone
    // (8e6bf67; a loaded CI run saw two such with a prefetch of 400), and a batch may close on
    // what gathered in GATHER_MS. What holds: the burst is not a row of one-event transactions
    // (at most one event in twenty alone, at most a transaction per ten events). A quiet run
    // here: about 21 transactions, all full but the first and the last.
    const alone = batches.filter((n) => n === 1).length;
    expect(alone, `one-event batches in ${JSON.stringify(batches)}`).toBeLessThanOrEqual(burst / 20);
    expect(batches.length, `transactions: ${JSON.stringify(batches)}`).toBeLessThanOrEqual(burst / 10);
  });

  it('still runs batch transactions side by side when the batch handler is slow', async () => {
    const transport = await h.transport();
    let running = 0;
    let most = 0;
    let applied = 0;
    await consumer(transport, {
      batchHandler: async (events, context) => {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setTimeout(r, 300));
        running--;
        for (const event of events) await recordEffect(event, context);
      },
      maxBatch: 50,
      concurrency: 4,
      onApplied: (n) => (applied += n),
    });
    // One at a time, as a slow trickle: each must start without waiting for the one before.
    for (let i = 0; i < 4; i++) {
      await transport.publish([wireEvent()]);
      await new Promise((r) => setTimeout(r, 40));
    }
    await waitFor(() => applied === 4, 10_000, '4 events applied');
    expect(most).toBeGreaterThan(1);
  });

  it('applies each event once when duplicates reach two consumers of one queue concurrently', async () => {
    const [t1, t2, publisher] = [await h.transport('c1'), await h.transport('c2'), await h.transport('pub')];
    await consumer(t1, { maxBatch: 10 });
    await consumer(t2, { maxBatch: 10 });
    const events = Array.from({ length: 300 }, () => wireEvent());
    // Every event three times, interleaved, so copies land on both consumers at once.
    await publisher.publish([...events, ...events, ...events]);
    const db = await h.db();
    await waitFor(async () => (await effectStats(db)).distinct === 300, 30_000, '300 distinct effects');
    await waitFor(async () => (await publisher.queueDepth(`${h.namespace}.test.effects`)) === 0, 10_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 300));
    expect(await effectStats(db)).toEqual({ rows: 300, distinct: 300 });
  });

  it('redelivers an event whose consumer was SIGKILLed after commit and before ack, and applies it once', async () => {
    h.queues.push({ queue: `${h.namespace}.test.effects`, retryDelaysMs: [50] });
    const doomed = await h.spawn('consumer', { KILL_AT: 'after-commit' });
    const died = new Promise<NodeJS.Signals | null>((resolve) => doomed.once('exit', (_code, signal) => resolve(signal)));
    const transport = await h.transport('pub');
    const event = wireEvent();
    await transport.publish([event]);
    expect(await died).toBe('SIGKILL');
    const db = await h.db();
    expect(await effectStats(db)).toEqual({ rows: 1, distinct: 1 }); // committed, never acked

    await h.spawn('consumer');
    await waitFor(async () => (await transport.queueDepth(`${h.namespace}.test.effects`)) === 0, 15_000, 'redelivered and acked');
    await new Promise((r) => setTimeout(r, 300));
    expect(await effectStats(db)).toEqual({ rows: 1, distinct: 1 });
  });

  it('loses nothing and applies nothing twice when every broker connection is force-closed mid-stream', async () => {
    const db = await h.db();
    const relay = new OutboxRelay({ db, transport: await h.transport('relay'), logger: silent, batchSize: 250, pollIntervalMs: 50, retryDelayMs: 50 });
    await consumer(await h.transport('consumer'), { maxBatch: 25 });
    await relay.start();

    let written = 0;
    const writer = (async () => {
      while (written < 5_000) {
        await db.fork().transactional((em) => publish(em, 'test', Array.from({ length: 50 }, () => uploadedEvent())));
        written += 50;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await waitFor(async () => (await effectStats(db)).rows >= 500, 30_000, 'the stream to be flowing');
    expect(await closeBrokerConnections(h.namespace)).toBeGreaterThanOrEqual(2);
    await waitFor(async () => (await effectStats(db)).rows >= 2_500, 60_000, 'the stream to resume');
    expect(await closeBrokerConnections(h.namespace)).toBeGreaterThanOrEqual(2);
    await writer;
    await waitFor(async () => (await effectStats(db)).distinct === 5_000, 60_000, 'all 5,000 effects');
    await new Promise((r) => setTimeout(r, 500));
    expect(await effectStats(db)).toEqual({ rows: 5_000, distinct: 5_000 });
    await relay.stop();
  });

  it('dead-letters an event whose handler always throws after the configured attempts, keeps others flowing, and applies it once on replay after a fix', async () => {
    const transport = await h.transport();
    let broken = true;
    let calls = 0;
    const poison = wireEvent();
    const poisonId = JSON.parse(poison.body.toString()).id as string;
    await consumer(transport, {
      maxAttempts: 3,
      handler: async (event, context) => {
        if (event.id === poisonId) {
          calls++;
          if (broken) throw Object.assign(new Error('the analysis backend is down'), { code: 'BACKEND_DOWN' });
        }
        await recordEffect(event, context);
      },
    });
    const others = Array.from({ length: 20 }, () => wireEvent());
    await transport.publish([poison, ...others]);
    const db = await h.db();
    const queue = `${h.namespace}.test.effects`;
    await waitFor(async () => (await transport.listDeadLetters(queue, 10)).length === 1, 15_000, 'the dead letter');
    expect(await effectStats(db)).toEqual({ rows: 20, distinct: 20 });
    expect(calls).toBe(3);
    const [dead] = await transport.listDeadLetters(queue, 10);
    expect(dead!.messageId).toBe(poisonId);
    expect(dead!.headers[Headers.errorCode]).toBe('BACKEND_DOWN');
    expect(dead!.headers[Headers.errorMessage]).toBe('the analysis backend is down');
    expect(dead!.headers[Headers.attempt]).toBe(3);

    broken = false;
    expect(await transport.replayDeadLetters(queue)).toBe(1);
    await waitFor(async () => (await effectStats(db)).rows === 21, 10_000, 'the replayed effect');
    expect(await transport.replayDeadLetters(queue)).toBe(0);
    await transport.publish([poison]); // a late duplicate of an applied event
    await new Promise((r) => setTimeout(r, 300));
    expect(await effectStats(db)).toEqual({ rows: 21, distinct: 21 });
  });

  it('dead-letters a malformed event at once, with zero retries, and an UnrecoverableError likewise', async () => {
    const transport = await h.transport();
    let calls = 0;
    const refused = wireEvent();
    const refusedId = JSON.parse(refused.body.toString()).id as string;
    await consumer(transport, {
      handler: async (event, context) => {
        calls++;
        if (event.id === refusedId) throw new UnrecoverableError('BUDGET_EXCEEDED', 'no budget left');
        await recordEffect(event, context);
      },
    });
    const queue = `${h.namespace}.test.effects`;
    await transport.publish([
      { routingKey: 'document.uploaded', messageId: 'not-json', body: Buffer.from('{not json') },
      wireEvent({ dataschema: 'document.uploaded/v9' }),
      wireEvent({ data: { documentId: 'd', title: '' } }),
      refused,
      wireEvent(),
    ]);
    await waitFor(async () => (await transport.listDeadLetters(queue, 10)).length === 4, 10_000, 'four dead letters');
    const dead = await transport.listDeadLetters(queue, 10);
    expect(dead.map((d) => d.headers[Headers.errorCode]).sort()).toEqual(['BUDGET_EXCEEDED', 'INVALID_DATA', 'INVALID_JSON', 'UNKNOWN_SCHEMA']);
    expect(dead.every((d) => d.headers[Headers.attempt] === 1)).toBe(true);
    expect(calls).toBe(2); // the refused one once, the valid one once; malformed ones never reach the handler
    expect(await effectStats(await h.db())).toEqual({ rows: 1, distinct: 1 });
  });

  it('publishes follow-up events in the handler transaction, continuing the incoming trace', async () => {
    const transport = await h.transport();
    const observer = await h.observe(transport, ['analysis.started']);
    const db = await h.db();
    const relay = new OutboxRelay({ db, transport, logger: silent, pollIntervalMs: 50 });
    await relay.start();
    await consumer(transport, {
      handler: async (event, context) => {
        if (event.dataschema !== 'document.uploaded/v1') return;
        await context.publish([
          { type: 'analysis.started', subject: event.data.documentId, data: { documentId: event.data.documentId, jobId: event.data.jobId, attempt: context.attempt, startedAt: new Date().toISOString() } },
        ]);
      },
    });
    const traceId = 'ab'.repeat(16);
    await transport.publish([wireEvent({ traceparent: `00-${traceId}-${'cd'.repeat(8)}-01` })]);
    await waitFor(() => observer.deliveries.length === 1, 10_000, 'the follow-up event');
    const followUp = JSON.parse(observer.deliveries[0]!.body.toString());
    expect(followUp.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(followUp.traceparent).not.toContain('cd'.repeat(8));
    expect(followUp.tenantid).toBe('tenant-a');
    expect(followUp.source).toBe('test');
    await relay.stop();
  });
});
