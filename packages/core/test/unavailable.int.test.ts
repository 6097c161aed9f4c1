/**
 * A subgraph whose PostgreSQL goes away answers SERVICE_UNAVAILABLE (HTTP 503, Retry-After), never
 * INTERNAL_SERVER_ERROR: its database reached through a TCP proxy of the test's own, taken down
 * (connections refused, pooled ones cut), and a query terminated under a request with
 * pg_terminate_backend. Once the database is back, the same requests are served.
 */
import { parse as gql } from 'graphql';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutboxMessage, dropDatabase, openDatabase, type Database } from '../src/db/index.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { publish } from '../src/events/publish.ts';
import { createSubgraph, type Subgraph } from '../src/server.ts';
import { startTcpProxy, type TcpProxy } from '../src/testing/proxy.ts';
import { servicesAvailable, testNamespace, TEST_DATABASE_URL, waitFor } from '../src/testing/services.ts';
import { uploadedEvent } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

type Answer = { status: number; retryAfter: string | null; body: { data?: Record<string, unknown> | null; errors?: { message: string; extensions?: Record<string, unknown> }[] } };

describe.skipIf(!(await servicesAvailable()))('a subgraph whose database goes away', () => {
  const dbName = testNamespace('tributary_unavailable');
  let proxy: TcpProxy;
  let db: Database;
  let subgraph: Subgraph;
  let url: string;

  beforeAll(async () => {
    const server = new URL(TEST_DATABASE_URL);
    proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const proxied = new URL(TEST_DATABASE_URL);
    proxied.port = String(proxy.port);
    db = await openDatabase({ service: 'test', target: { kind: 'postgres', url: proxied.toString(), dbName }, entities: [], logger: silent, poolSize: 2 });
    subgraph = await createSubgraph({
      name: 'test',
      typeDefs: gql(`
        extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])
        type Query { outbox: Int!, sleep(seconds: Float!): Boolean }
        type Mutation { emit: Boolean! }
      `),
      resolvers: {
        Query: {
          // Through MikroORM's entity API, and raw SQL: both ways resolvers read.
          outbox: (_: unknown, __: unknown, context: { db: Database }) => context.db.fork().count(OutboxMessage, {}),
          sleep: async (_: unknown, { seconds }: { seconds: number }, context: { db: Database }) => {
            await context.db.fork().getConnection().execute('select pg_sleep(?)', [seconds]);
            return true;
          },
        },
        Mutation: {
          emit: async (_: unknown, __: unknown, context: { db: Database }) => {
            await context.db.fork().transactional((em) => publish(em, 'test', [uploadedEvent()]));
            return true;
          },
        },
      },
      db,
      transport: new InMemoryTransport('unavailable'),
      logger: silent,
      context: async ({ db }) => ({ db }),
    });
    url = await subgraph.listen(0);
  });

  afterAll(async () => {
    await subgraph?.stop();
    await proxy?.close();
    await dropDatabase(TEST_DATABASE_URL, dbName);
  });

  async function post(query: string): Promise<Answer> {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Answer['body'] };
  }

  const unavailable = (answer: Answer) => {
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    expect(answer.retryAfter).toBe('1');
    expect(answer.body.errors).toEqual([expect.objectContaining({ message: 'the database is unavailable; retry in 1 s', extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1, dependency: 'database' } })]);
  };

  it('answers reads and writes with SERVICE_UNAVAILABLE, 503 and Retry-After while it refuses connections, and serves them once it is back', async () => {
    expect(await post('mutation { emit }')).toMatchObject({ status: 200, body: { data: { emit: true } } });
    await proxy.down();
    unavailable(await post('{ outbox }'));
    unavailable(await post('{ sleep(seconds: 0) }'));
    unavailable(await post('mutation { emit }'));
    await proxy.up();
    await waitFor(async () => (await post('{ outbox }')).status === 200, 10_000, 'the database to be reached again');
    expect(await post('mutation { emit }')).toMatchObject({ status: 200, body: { data: { emit: true } } });
    // The refused write stored nothing: the two that were answered, and only they.
    expect((await post('{ outbox }')).body.data).toEqual({ outbox: 2 });
  });

  it('answers a request whose connection is terminated under it (pg_terminate_backend) with SERVICE_UNAVAILABLE', async () => {
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      const answer = post('{ sleep(seconds: 30) }');
      const sleeping = async () => (await admin.query("select pid from pg_stat_activity where datname = $1 and query like 'select pg_sleep%'", [dbName])).rows.map((r: { pid: number }) => r.pid);
      await waitFor(async () => (await sleeping()).length === 1, 10_000, 'the query to run');
      await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where pid = any($1)', [await sleeping()]);
      unavailable(await answer);
    } finally {
      await admin.end();
    }
    // A connection the pool has not yet seen die can fail one more request the same way.
    await waitFor(async () => (await post('{ outbox }')).status === 200, 10_000, 'the pool to serve again');
  });
});
