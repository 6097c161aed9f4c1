import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, queryRows, type Database } from '../src/db/index.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { publish } from '../src/events/publish.ts';
import { OutboxRelay } from '../src/events/relay.ts';
import type { Delivery } from '../src/events/transport.ts';
import { waitFor } from '../src/testing/services.ts';
import { uploadedEvent } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

describe('the outbox relay on the in-memory bus (pnpm dev)', () => {
  let db: Database | undefined;
  afterEach(async () => {
    await db?.close();
  });

  it('claims without holding a transaction, and gives the rows back when the publish throws', async () => {
    db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
    const transport = new InMemoryTransport('mem');
    await transport.start();
    const received: Delivery[] = [];
    await transport.consume({ queue: 'mem.test.all', bindings: ['#'], prefetch: 100, retryDelaysMs: [] }, (d) => {
      received.push(d);
      void d.ack();
    });
    let failures = 1;
    const flaky = Object.assign(Object.create(transport) as InMemoryTransport, {
      publish: async (messages: Parameters<InMemoryTransport['publish']>[0]) => {
        if (failures-- > 0) throw new Error('bus refused');
        return transport.publish(messages);
      },
    });
    const relay = new OutboxRelay({ db, transport: flaky, logger: silent, retryDelayMs: 20 });
    await db.fork().transactional((em) => publish(em, 'test', [uploadedEvent(), uploadedEvent()]));
    await expect(relay.publishBatch()).rejects.toThrow('bus refused');
    const unsent = async () => Number((await queryRows<{ n: number | string }>(db!.fork(), 'select count(*) as n from tributary_outbox where sent_at is null', []))[0]!.n);
    expect(await unsent()).toBe(2);
    expect(await relay.publishBatch()).toBe(2);
    await waitFor(() => received.length === 2, 5_000, 'both delivered');
    expect(await unsent()).toBe(0);
    await transport.close();
  });
});
