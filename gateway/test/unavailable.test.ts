/**
 * A subgraph's SERVICE_UNAVAILABLE reaches the gateway's client as SERVICE_UNAVAILABLE with HTTP
 * 503 and Retry-After, whether the subgraph answered it with a 503 (a request it refused whole)
 * or beside data; its other coded refusals (a 400 BAD_USER_INPUT) pass with their codes too,
 * where Apollo would report `<status>: <text>` as INTERNAL_SERVER_ERROR. Without services: a
 * production gateway on the in-memory bus over the real supergraph, its insights subgraph a
 * stand-in answering as core's subgraph factory does (that factory's own answers:
 * packages/core/test/unavailable*.test.ts).
 */
import { createLogger } from '@tributary/core';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { startGateway, type RunningGateway } from '../src/gateway.ts';

const secret = 'x'.repeat(40);
const UNAVAILABLE = { message: 'the database is unavailable; retry in 1 s', extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1, dependency: 'database' } };

/** What the stand-in subgraph answers next: a status, headers and a JSON or text body. */
let answer: { status: number; headers?: Record<string, string>; body: unknown } = { status: 200, body: { data: null } };

describe('the gateway answering a subgraph’s SERVICE_UNAVAILABLE', () => {
  let subgraph: Server;
  let gateway: RunningGateway;
  let token: string;

  beforeAll(async () => {
    subgraph = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const text = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
        res.writeHead(answer.status, { 'content-type': typeof answer.body === 'string' ? 'text/html' : 'application/json', ...answer.headers });
        res.end(text);
      });
    });
    await new Promise<void>((resolve) => subgraph.listen(0, '127.0.0.1', resolve));
    const insights = `http://127.0.0.1:${(subgraph.address() as AddressInfo).port}/graphql`;
    gateway = await startGateway({
      env: { NODE_ENV: 'production', AUTH_JWT_SECRET: secret, INTERNAL_SIGNING_SECRET: secret, INSIGHTS_URL: insights, DOCUMENTS_URL: insights, PORT: '0', HOST: '127.0.0.1' },
      logger: createLogger({ service: 'gateway', level: 'silent' }),
    });
    token = await signToken(secret, { tenant: 'tenant-a', sub: 'alice' });
  });
  afterAll(async () => {
    await gateway?.stop();
    subgraph?.closeAllConnections();
    await new Promise((resolve) => subgraph?.close(resolve));
  });

  async function query(text: string) {
    const response = await fetch(gateway.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query: text }) });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] } };
  }

  it('answers 503 with Retry-After when the subgraph refused the request whole with a 503', async () => {
    answer = { status: 503, headers: { 'retry-after': '1' }, body: { errors: [UNAVAILABLE] } };
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([503, '1']);
    expect(body.errors).toEqual([{ message: UNAVAILABLE.message, extensions: { ...UNAVAILABLE.extensions, serviceName: 'insights' } }]);
  });

  it('answers 503 with Retry-After when the subgraph answered a field with it beside data', async () => {
    answer = { status: 503, headers: { 'retry-after': '1' }, body: { data: { stats: null }, errors: [{ ...UNAVAILABLE, path: ['stats'] }] } };
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([503, '1']);
    expect(body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
    // The same error from a subgraph that kept its status 200: what makes the 503 is the code.
    answer = { status: 200, body: { data: { stats: null }, errors: [{ ...UNAVAILABLE, path: ['stats'] }] } };
    expect((await query('{ stats { documents } }')).status).toBe(503);
  });

  it('passes a subgraph’s 400 BAD_USER_INPUT on with its code and field, not as INTERNAL_SERVER_ERROR', async () => {
    answer = { status: 400, body: { errors: [{ message: '`id` of document contains a NUL character (U+0000), which cannot be stored', extensions: { code: 'BAD_USER_INPUT', field: 'id' } }] } };
    const { status, retryAfter, body } = await query('{ document(id: "x") { title } }');
    expect([status, retryAfter]).toEqual([200, null]);
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'id' });
  });

  it('still reports a subgraph answer that is no GraphQL response as an internal error, masked', async () => {
    answer = { status: 502, body: '<html>Bad Gateway</html>' };
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([200, null]);
    expect(body.errors).toEqual([{ message: 'internal error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]);
  });
});
