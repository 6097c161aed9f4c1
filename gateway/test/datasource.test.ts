import type { GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createUndiciFetcher, deduplicateRepresentations, FastDataSource, type SubgraphResponse } from '../src/datasource.ts';
import { INCOMING_OPERATION } from '../src/executor/execute.ts';

interface Received {
  body: { query: string; variables?: { representations?: unknown[] } };
  headers: IncomingMessage['headers'];
  socket: number;
}

/** A subgraph stand-in that records every request and answers with `respond`. */
let server: Server;
let url: string;
const received: Received[] = [];
let respond: (body: Received['body']) => { status?: number; json: unknown } = () => ({ json: { data: {} } });
const sockets = new WeakMap<object, number>();
let socketCount = 0;

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => {
      let socket = sockets.get(req.socket);
      if (socket === undefined) sockets.set(req.socket, (socket = ++socketCount));
      const body = JSON.parse(text) as Received['body'];
      received.push({ body, headers: req.headers, socket });
      const answer = respond(body);
      res.writeHead(answer.status ?? 200, { 'content-type': 'application/json', 'cache-control': 'max-age=30' });
      res.end(JSON.stringify(answer.json));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  received.length = 0;
});

const ENTITY_QUERY = 'query($representations:[_Any!]!){_entities(representations:$representations){...on Product{name}}}';
const product = (upc: string) => ({ __typename: 'Product', upc });

/** What Apollo Gateway passes to `process` for one fetch of an incoming operation. */
function fetchOptions(query: string, variables: Record<string, unknown>, context: Record<string, unknown> = {}): GraphQLDataSourceProcessOptions {
  return {
    kind: INCOMING_OPERATION,
    request: { query, variables },
    context,
    incomingRequestContext: { context, request: {}, overallCachePolicy: undefined } as never,
  };
}

/** Answers `_entities` from a table by upc: a missing upc is null with an error at its position. */
function entitySubgraph(names: Record<string, string>) {
  return (body: Received['body']) => {
    const representations = (body.variables?.representations ?? []) as { upc: string }[];
    const errors: unknown[] = [];
    const entities = representations.map((r, i) => {
      const name = names[r.upc];
      if (name === undefined) {
        errors.push({ message: `no product ${r.upc}`, path: ['_entities', i, 'name'], extensions: { code: 'NOT_FOUND' } });
        return null;
      }
      return { __typename: 'Product', name };
    });
    return { json: { data: { _entities: entities }, ...(errors.length ? { errors } : {}) } };
  };
}

describe('FastDataSource', () => {
  it('sends each distinct representation once and answers in the original shape', async () => {
    respond = entitySubgraph({ '1': 'Table', '2': 'Couch' });
    const source = new FastDataSource({ url });
    try {
      const representations = [product('1'), product('2'), product('1'), product('1'), product('2')];
      const response = await source.process(fetchOptions(ENTITY_QUERY, { representations }));

      expect(received).toHaveLength(1);
      expect(received[0]!.body.variables?.representations).toEqual([product('1'), product('2')]);
      const entities = (response.data as { _entities: { name: string }[] })._entities;
      expect(entities).toEqual([{ __typename: 'Product', name: 'Table' }, { __typename: 'Product', name: 'Couch' }, { __typename: 'Product', name: 'Table' }, { __typename: 'Product', name: 'Table' }, { __typename: 'Product', name: 'Couch' }]);
      // The gateway merges later fetches into each entity object: repeated ones must not be shared.
      expect(entities[2]).not.toBe(entities[0]);
      expect(entities[4]).not.toBe(entities[1]);
      expect(response.errors).toBeUndefined();
    } finally {
      await source.close();
    }
  });

  it('returns null entities and their errors at every original position', async () => {
    respond = entitySubgraph({ '1': 'Table' });
    const source = new FastDataSource({ url });
    try {
      const representations = [product('9'), product('1'), product('9'), product('1'), product('8')];
      const response = await source.process(fetchOptions(ENTITY_QUERY, { representations }));

      expect(received[0]!.body.variables?.representations).toEqual([product('9'), product('1'), product('8')]);
      expect((response.data as { _entities: unknown[] })._entities).toEqual([null, { __typename: 'Product', name: 'Table' }, null, { __typename: 'Product', name: 'Table' }, null]);
      expect(response.errors).toEqual([
        { message: 'no product 9', path: ['_entities', 0, 'name'], extensions: { code: 'NOT_FOUND' } },
        { message: 'no product 9', path: ['_entities', 2, 'name'], extensions: { code: 'NOT_FOUND' } },
        { message: 'no product 8', path: ['_entities', 4, 'name'], extensions: { code: 'NOT_FOUND' } },
      ]);
    } finally {
      await source.close();
    }
  });

  it('remaps entity errors even when the subgraph nulls the whole answer', async () => {
    respond = () => ({ json: { data: null, errors: [{ message: 'boom', path: ['_entities', 1] }, { message: 'no path' }] } });
    const source = new FastDataSource({ url });
    try {
      const response = await source.process(fetchOptions(ENTITY_QUERY, { representations: [product('1'), product('2'), product('2')] }));
      expect(response.data).toBeNull();
      expect(response.errors).toEqual([
        { message: 'boom', path: ['_entities', 1] },
        { message: 'boom', path: ['_entities', 2] },
        { message: 'no path' },
      ]);
    } finally {
      await source.close();
    }
  });

  it('passes requests without duplicates, and other operations, through unchanged', async () => {
    respond = (body) => (body.query.includes('_entities') ? entitySubgraph({ '1': 'Table', '2': 'Couch' })(body) : { json: { data: { topProducts: [{ upc: '1' }, { upc: '1' }] } } });
    const source = new FastDataSource({ url });
    try {
      await source.process(fetchOptions(ENTITY_QUERY, { representations: [product('1'), product('2')] }));
      // Same variable name, but not an entity fetch: not touched.
      const other = await source.process(fetchOptions('query($representations:[String]){topProducts{upc}}', { representations: ['a', 'a'] }));
      expect(received.map((r) => r.body.variables?.representations)).toEqual([[product('1'), product('2')], ['a', 'a']]);
      expect(other.data).toEqual({ topProducts: [{ upc: '1' }, { upc: '1' }] });
    } finally {
      await source.close();
    }
  });

  it('sends every representation when de-duplication is off', async () => {
    respond = entitySubgraph({ '1': 'Table' });
    const source = new FastDataSource({ url, deduplicate: false });
    try {
      await source.process(fetchOptions(ENTITY_QUERY, { representations: [product('1'), product('1')] }));
      expect(received[0]!.body.variables?.representations).toEqual([product('1'), product('1')]);
    } finally {
      await source.close();
    }
  });

  it('keeps the headers a subclass sets in willSendRequest', async () => {
    respond = entitySubgraph({ '1': 'Table' });
    class Signing extends FastDataSource<{ tenantId: string }> {
      override willSendRequest({ request, context }: GraphQLDataSourceProcessOptions<{ tenantId: string }>): void {
        request.http?.headers.set('x-tenant', context.tenantId);
      }
    }
    const source = new Signing({ url });
    try {
      await source.process(fetchOptions(ENTITY_QUERY, { representations: [product('1'), product('1')] }, { tenantId: 't-1' }) as never);
      expect(received[0]!.headers['x-tenant']).toBe('t-1');
      expect(received[0]!.headers['content-type']).toBe('application/json');
    } finally {
      await source.close();
    }
  });

  it('passes on the coded errors a subgraph answers with another status than 2xx (a 400 refusal, a 503), as a response', async () => {
    const source = new FastDataSource({ url });
    try {
      const refusal = { errors: [{ message: '`id` of job contains a NUL character (U+0000), which cannot be stored', extensions: { code: 'BAD_USER_INPUT', field: 'id' } }] };
      respond = () => ({ status: 400, json: refusal });
      expect(await source.process(fetchOptions('{ job(id: "x") { id } }', {}))).toEqual(refusal);
      const unavailable = { data: { a: 1, b: null }, errors: [{ message: 'the database is unavailable; retry in 1 s', path: ['b'], extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1 } }] };
      respond = () => ({ status: 503, json: unavailable });
      expect(await source.process(fetchOptions('{ a b }', {}))).toEqual(unavailable);
    } finally {
      await source.close();
    }
  });

  it('reports a subgraph HTTP error as Apollo does', async () => {
    respond = () => ({ status: 401, json: { errors: [{ message: 'who are you' }] } });
    const source = new FastDataSource({ url });
    try {
      await expect(source.process(fetchOptions('{ me { id } }', {}))).rejects.toMatchObject({ message: '401: Unauthorized', extensions: { code: 'UNAUTHENTICATED' } });
    } finally {
      await source.close();
    }
  });
});

describe('createUndiciFetcher', () => {
  it('reuses keep-alive connections for sequential requests', async () => {
    respond = () => ({ json: { data: { ok: true } } });
    const fetcher = createUndiciFetcher();
    try {
      const responses = [];
      for (let i = 0; i < 10; i++) {
        const response = await fetcher(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ok}"}' });
        responses.push({ status: response.status, ok: response.ok, type: response.headers.get('Content-Type'), body: await response.json() });
      }
      expect(responses.every((r) => r.status === 200 && r.ok && r.type === 'application/json' && (r.body as { data: { ok: boolean } }).data.ok)).toBe(true);
      // undici may open a second connection while the first is being released; never one per request.
      expect(new Set(received.map((r) => r.socket)).size).toBeLessThanOrEqual(2);
    } finally {
      await fetcher.close();
    }
  });

  it('returns a response that can be cloned before it is read', async () => {
    respond = () => ({ json: { data: { n: 1 } } });
    const fetcher = createUndiciFetcher();
    try {
      const response = await fetcher(url, { method: 'POST', body: '{"query":"{n}"}' });
      const copy = response.clone();
      expect(await response.text()).toBe('{"data":{"n":1}}');
      expect(await copy.json()).toEqual({ data: { n: 1 } });
      expect(response.bodyUsed).toBe(true);
      await expect(response.text()).rejects.toThrow(/already been read/);
      expect(response.statusText).toBe('OK');
    } finally {
      await fetcher.close();
    }
  });
});

describe('deduplicateRepresentations', () => {
  it('leaves a response with the wrong number of entities for the gateway to report', () => {
    const batch = deduplicateRepresentations({ query: ENTITY_QUERY, variables: { representations: [product('1'), product('1'), product('2')] } })!;
    expect(batch.original).toBe(3);
    expect(batch.distinct).toBe(2);
    const wrong: SubgraphResponse = { data: { _entities: [{ name: 'Table' }] } };
    expect(batch.expand(wrong)).toBe(wrong);
  });
});
