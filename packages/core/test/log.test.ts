import type { Database } from '@tributary/core/db';
import { queryRun } from '@tributary/core/db';
import { InMemoryTransport, MemoryEventLog, SqlEventLog, eventLogMigrations } from '@tributary/core/events';
import { describeLogContract, openTestDatabase } from '@tributary/core/testing';
import { afterAll, beforeAll } from 'vitest';

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

describeLogContract('sql table on PGlite', async (namespace, { tinyRetention }) => {
  const db = shared;
  const log = new SqlEventLog(db, tinyRetention ? { maxEntries: 20 } : {});
  const transport = new InMemoryTransport(namespace, log);
  await transport.start();
  return {
    log,
    publish: (messages) => transport.publish(messages),
    trim: async () => void (await log.trim()),
    cleanup: async () => {
      await transport.close();
      log.close();
      await queryRun(db.fork(), 'truncate tributary_event_log');
      await queryRun(db.fork(), 'update tributary_event_log_head set next = 0');
    },
  };
});
