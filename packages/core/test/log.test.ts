import type { Database } from '@tributary/core/db';
import { queryRun } from '@tributary/core/db';
import { InMemoryTransport, MemoryEventLog, SqlEventLog, eventLogMigrations } from '@tributary/core/events';
import { describeLogContract, openTestDatabase, sqlLogFixture } from '@tributary/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

describeLogContract('memory array', async (namespace, { tinyRetention }) => {
  const log = new MemoryEventLog(tinyRetention ? { maxEntries: 20 } : {});
  const transport = new InMemoryTransport(namespace, log);
  await transport.start();
  return { log, publish: (messages) => transport.publish(messages), cleanup: () => transport.close() };
});

// One in-memory PGlite for the file (opening one takes seconds), emptied after each test.
let shared: Database;
beforeAll(async () => {
  shared = await openTestDatabase({ kind: 'pglite', dataDir: 'memory://' }, { migrations: eventLogMigrations });
}, 60_000);
afterAll(async () => {
  await shared?.close();
});

describeLogContract('sql table on PGlite', (namespace, options) =>
  sqlLogFixture(shared, namespace, options, async () => {
    await queryRun(shared.fork(), 'truncate tributary_event_log');
    await queryRun(shared.fork(), 'update tributary_event_log_head set next = 0, entries = 0, bytes = 0');
  }),
);

describe('the SQL log’s retention', () => {
  afterEach(async () => {
    await queryRun(shared.fork(), 'truncate tributary_event_log');
    await queryRun(shared.fork(), 'update tributary_event_log_head set next = 0, entries = 0, bytes = 0');
  });
  const entry = (i: number) => ({ routingKey: 'a.b', messageId: `m${i}`, body: Buffer.alloc(10) });

  it('drops the oldest entries past its bytes, and offsets go on after them', async () => {
    const log = new SqlEventLog(shared, { maxBytes: 25 });
    for (let i = 0; i < 5; i++) await log.append([entry(i)]);
    expect(await log.trim()).toBe(3);
    expect(await log.stats()).toMatchObject({ entries: 2, first: 3, last: 4 });
    await log.append([entry(5)]);
    expect((await log.stats()).last).toBe(5);
    log.close();
  });

  it('drops entries older than its age', async () => {
    const log = new SqlEventLog(shared, { maxAgeMs: 200 });
    await log.append([entry(0), entry(1)]);
    await new Promise((r) => setTimeout(r, 300));
    await log.append([entry(2)]);
    expect(await log.trim()).toBe(2);
    expect(await log.stats()).toMatchObject({ entries: 1, first: 2, last: 2 });
    log.close();
  });
});
