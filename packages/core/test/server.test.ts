import { parse as gql } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../src/db/index.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { publish } from '../src/events/publish.ts';
import { OutboxRelay } from '../src/events/relay.ts';
import { createSubgraph, type Subgraph } from '../src/server.ts';
import { waitFor } from '../src/testing/services.ts';
import { uploadedEvent } from './fixtures/effects.ts';
import { silent } from './fixtures/harness.ts';

const typeDefs = gql(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])
  type Query { ping: String! }
  type Mutation { emit: Boolean! }
`);

describe('createSubgraph', () => {
  let subgraph: Subgraph | undefined;
  let db: Database;
  let transport: InMemoryTransport;
  afterEach(async () => {
    await subgraph?.stop();
    subgraph = undefined;
  });

  async function start(maxBodyBytes?: number) {
    db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
    transport = new InMemoryTransport('srv');
    const relay = new OutboxRelay({ db, transport, logger: silent, pollIntervalMs: 60_000 });
    subgraph = await createSubgraph({
      name: 'test',
      typeDefs,
      resolvers: {
        Query: { ping: () => 'pong' },
        Mutation: {
          emit: async (_: unknown, __: unknown, context: { db: Database }) => {
            await context.db.fork().transactional((em) => publish(em, 'test', [uploadedEvent()]));
            return true;
          },
        },
      },
      db,
      transport,
      logger: silent,
      relay,
      context: async ({ db }) => ({ db }),
      ...(maxBodyBytes ? { maxBodyBytes } : {}),
    });
    return subgraph.listen(0);
  }

  it('answers GraphQL, /health and /ready', async () => {
    const url = await start();
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ ping _service { sdl } }' }) });
    const body = (await response.json()) as { data: { ping: string; _service: { sdl: string } } };
    expect(body.data.ping).toBe('pong');
    expect(body.data._service.sdl).toContain('ping');
    expect((await fetch(new URL('/health', url))).status).toBe(200);
    const ready = await fetch(new URL('/ready', url));
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', database: true, broker: true });
  });

  it('reports not ready when the broker is gone', async () => {
    const url = await start();
    await transport.close();
    const ready = await fetch(new URL('/ready', url));
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ broker: false, database: true });
  });

  it('refuses an oversize body with 413 and malformed JSON with 400, both coded', async () => {
    const url = await start(1024);
    const big = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: `{ ping } # ${'x'.repeat(4096)}` }) });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PAYLOAD_TOO_LARGE');
    const bad = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": ' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('BAD_REQUEST');
  });

  it('flushes the outbox on graceful shutdown', async () => {
    const url = await start();
    const seen: string[] = [];
    await transport.consume({ queue: 'srv.observer', bindings: ['document.uploaded'], prefetch: 10, retryDelaysMs: [] }, (d) => {
      seen.push(d.routingKey);
      void d.ack();
    });
    // The relay polls once a minute and the in-memory database has no other relay: only the
    // shutdown flush can publish this event in time.
    await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { emit }' }) });
    const close = transport.close.bind(transport);
    let flushedBeforeClose = false;
    transport.close = async () => {
      flushedBeforeClose = (await transport.queueDepth('srv.observer')) + seen.length === 1;
      await close();
    };
    await subgraph!.stop();
    subgraph = undefined;
    await waitFor(() => flushedBeforeClose, 1_000, 'the flush before the broker closed');
  });
});
