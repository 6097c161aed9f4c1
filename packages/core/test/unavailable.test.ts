/**
 * A dependency briefly unreachable is the client's cue to retry, not a bug: which errors say so
 * (unavailableDependency, over the shapes pg, knex, MikroORM and our transports throw), and what a
 * subgraph answers for them (SERVICE_UNAVAILABLE, HTTP 503, Retry-After) while other failures stay
 * INTERNAL_SERVER_ERROR. The same with a real PostgreSQL going away: unavailable.int.test.ts.
 */
import { DeadlockException, DriverException, UniqueConstraintViolationException } from '@mikro-orm/core';
import { GraphQLError, parse as gql } from 'graphql';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/index.ts';
import { CoreErrorCode, TributaryError, unavailableDependency } from '../src/errors.ts';
import { InMemoryTransport } from '../src/events/memory.ts';
import { badUserInput } from '../src/graphql.ts';
import { createSubgraph, retryAfterSeconds, type Subgraph } from '../src/server.ts';
import { silent } from './fixtures/harness.ts';

/** An error as pg, net or knex make them: a message and a code. */
const failure = (message: string, fields: Record<string, unknown> = {}) => Object.assign(new Error(message), fields);
const refused = () => failure('connect ECONNREFUSED 127.0.0.1:5999', { code: 'ECONNREFUSED', errno: -111, syscall: 'connect', address: '127.0.0.1', port: 5999 });

describe('unavailableDependency', () => {
  it('says the database for a connection refused, reset or terminated, and for PostgreSQL going away or full', () => {
    const cases = [
      refused(),
      failure('read ECONNRESET', { code: 'ECONNRESET' }),
      new AggregateError([refused(), refused()], 'connect failed'),
      failure('terminating connection due to administrator command', { code: '57P01', severity: 'FATAL' }),
      failure('the database system is shutting down', { code: '57P03' }),
      failure('the database system is starting up', { code: '57P03' }),
      failure('sorry, too many clients already', { code: '53300' }),
      failure('connection failure', { code: '08006' }),
      failure('select 1 - Connection terminated unexpectedly'),
      failure('Client has encountered a connection error and is not queryable'),
      failure('Transaction query already complete, run with DEBUG=knex:tx for more info'),
      failure('Knex: Timeout acquiring a connection. The pool is probably full.', { name: 'KnexTimeoutError' }),
      new DriverException(failure('insert into "documents" … - terminating connection due to administrator command', { code: '57P01' })),
      new TributaryError(CoreErrorCode.DATABASE_UNAVAILABLE, 'could not open the documents database'),
    ];
    for (const error of cases) expect(unavailableDependency(error), String(error)).toBe('database');
  });

  it('says the broker for a closed transport, a publish timeout or a nack', () => {
    for (const code of [CoreErrorCode.TRANSPORT_CLOSED, CoreErrorCode.PUBLISH_TIMEOUT, CoreErrorCode.PUBLISH_NACKED]) {
      expect(unavailableDependency(new TributaryError(code, 'broker'))).toBe('broker');
    }
  });

  it('looks through what an error wraps: a resolver’s GraphQLError, a cause', () => {
    expect(unavailableDependency(new GraphQLError('wrapped', { originalError: refused() }))).toBe('database');
    expect(unavailableDependency(new Error('could not store', { cause: new TributaryError(CoreErrorCode.TRANSPORT_CLOSED, 'closed') }))).toBe('broker');
  });

  it('says nothing for what retrying later would not fix', () => {
    const cases: unknown[] = [
      new UniqueConstraintViolationException(failure('duplicate key value violates unique constraint', { code: '23505' })),
      new DeadlockException(failure('deadlock detected', { code: '40P01' })),
      failure('invalid byte sequence for encoding "UTF8": 0x00', { code: '22021' }),
      new Error('boom'),
      badUserInput('bad', 'title'),
      new TributaryError(CoreErrorCode.CONFIG_INVALID, 'bad config'),
      null,
      'ECONNREFUSED',
    ];
    for (const error of cases) expect(unavailableDependency(error), String(error)).toBeUndefined();
  });
});

describe('retryAfterSeconds', () => {
  it('is the largest wait the errors ask for, 1 for a SERVICE_UNAVAILABLE that names none, else undefined', () => {
    expect(retryAfterSeconds([{ extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 30 } }, { extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1 } }])).toBe(30);
    expect(retryAfterSeconds([{ extensions: { code: 'SERVICE_UNAVAILABLE' } }])).toBe(1);
    expect(retryAfterSeconds([{ extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 0.2 } }])).toBe(1);
    expect(retryAfterSeconds([{ extensions: { code: 'BAD_USER_INPUT' } }, {}])).toBeUndefined();
    expect(retryAfterSeconds(undefined)).toBeUndefined();
  });
});

describe('a subgraph whose resolver finds a dependency unreachable', () => {
  let subgraph: Subgraph;
  let url: string;
  const transport = new InMemoryTransport('unavailable');

  beforeAll(async () => {
    const db = await openDatabase({ service: 'test', target: { kind: 'pglite', dataDir: 'memory://' }, entities: [], logger: silent });
    subgraph = await createSubgraph({
      name: 'test',
      typeDefs: gql(`
        extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@key"])
        type Query { ok: Boolean!, read: Boolean, broken: Boolean }
        type Mutation { announce: Boolean! }
      `),
      resolvers: {
        Query: {
          ok: () => true,
          read: () => Promise.reject(new DriverException(refused())),
          broken: () => Promise.reject(failure('duplicate key value violates unique constraint', { code: '23505' })),
        },
        Mutation: {
          announce: async () => {
            await transport.publish([{ routingKey: 'document.uploaded', messageId: randomUUID(), body: Buffer.from('{}') }]);
            return true;
          },
        },
      },
      db,
      transport,
      logger: silent,
      context: async () => ({}),
      production: true,
    });
    url = await subgraph.listen(0);
  });
  afterAll(async () => {
    await subgraph?.stop();
  });

  async function post(query: string) {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as { data?: unknown; errors?: { message: string; path?: unknown; extensions?: Record<string, unknown> }[] } };
  }

  it('answers the database refusing connections with SERVICE_UNAVAILABLE, HTTP 503 and Retry-After, beside the data that was read', async () => {
    const { status, retryAfter, body } = await post('{ ok read }');
    expect(status).toBe(503);
    expect(retryAfter).toBe('1');
    expect(body).toEqual({
      data: { ok: true, read: null },
      errors: [{ message: 'the database is unavailable; retry in 1 s', path: ['read'], locations: expect.any(Array), extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1, dependency: 'database' } }],
    });
  });

  it('answers a closed broker with SERVICE_UNAVAILABLE naming the broker', async () => {
    await transport.close();
    const { status, retryAfter, body } = await post('mutation { announce }');
    expect([status, retryAfter]).toEqual([503, '1']);
    expect(body.errors?.[0]).toMatchObject({ message: 'the event broker is unavailable; retry in 1 s', extensions: { code: 'SERVICE_UNAVAILABLE', dependency: 'broker' } });
  });

  it('leaves any other failure INTERNAL_SERVER_ERROR, with no Retry-After', async () => {
    const { status, retryAfter, body } = await post('{ broken }');
    expect([status, retryAfter]).toEqual([200, null]);
    expect(body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
  });
});
