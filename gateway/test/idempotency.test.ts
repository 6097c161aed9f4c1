/**
 * The gateway's part of the Idempotency-Key: it forwards a mutation's key to the subgraph signed
 * with the caller's identity (and a query's not at all), refuses a malformed key on a mutation,
 * and passes the subgraph's IDEMPOTENCY_KEY_IN_USE (409, Retry-After) and IDEMPOTENCY_KEY_REUSED
 * (422) on with their status. Without services: a production gateway on the in-memory bus over the
 * real supergraph, its documents subgraph a stand-in that records what it receives. (The whole
 * system: idempotency.e2e.test.ts.)
 */
import { createLogger } from '@tributary/core';
import { IdentityHeaders, verifyIdentity } from '@tributary/core/identity';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../src/auth.ts';
import { startGateway, type RunningGateway } from '../src/gateway.ts';

const secret = 'x'.repeat(40);
const UPLOAD = 'mutation { uploadDocument(input: { title: "t", content: "c" }) { document { id } } }';

let answer: { status: number; body: unknown } = { status: 200, body: { data: null } };
let received: IncomingHttpHeaders[] = [];

describe('the gateway and a mutation’s Idempotency-Key', () => {
  let subgraph: Server;
  let gateway: RunningGateway;
  let token: string;

  beforeAll(async () => {
    subgraph = createServer((req, res) => {
      received.push(req.headers);
      req.resume();
      req.on('end', () => {
        res.writeHead(answer.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer.body));
      });
    });
    await new Promise<void>((resolve) => subgraph.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(subgraph.address() as AddressInfo).port}/graphql`;
    gateway = await startGateway({
      env: { NODE_ENV: 'production', AUTH_JWT_SECRET: secret, INTERNAL_SIGNING_SECRET: secret, DOCUMENTS_URL: url, PORT: '0', HOST: '127.0.0.1' },
      logger: createLogger({ service: 'gateway', level: 'silent' }),
    });
    token = await signToken(secret, { tenant: 'tenant-a', sub: 'alice' });
  });
  afterAll(async () => {
    await gateway?.stop();
    subgraph?.closeAllConnections();
    await new Promise((resolve) => subgraph?.close(resolve));
  });

  async function send(query: string, key?: string) {
    received = [];
    const response = await fetch(gateway.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...(key !== undefined ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify({ query }),
    });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as { errors?: { message: string; extensions?: Record<string, unknown> }[] } };
  }

  it('forwards a mutation’s key, signed with the caller’s identity', async () => {
    answer = { status: 200, body: { data: { uploadDocument: { document: { id: 'd1' } } } } };
    await send(UPLOAD, 'key-1');
    expect(received).toHaveLength(1);
    expect(received[0]![IdentityHeaders.idempotencyKey]).toBe('key-1');
    expect(verifyIdentity(secret, received[0]!)).toEqual({ tenantId: 'tenant-a', userId: 'alice', idempotencyKey: 'key-1' });
    // Without a key: none forwarded.
    await send(UPLOAD);
    expect(received[0]![IdentityHeaders.idempotencyKey]).toBeUndefined();
  });

  it('ignores a key, even a malformed one, on a query', async () => {
    answer = { status: 200, body: { data: { document: null } } };
    const got = await send('{ document(id: "x") { id } }', 'bad\tkey');
    expect(got.status).toBe(200);
    expect(received[0]![IdentityHeaders.idempotencyKey]).toBeUndefined();
  });

  it('refuses a malformed key on a mutation with BAD_REQUEST (400), sending nothing to the subgraph', async () => {
    for (const bad of ['', 'x'.repeat(256), 'tab\tinside', 'ünïcode']) {
      const got = await send(UPLOAD, bad);
      expect(got.status, JSON.stringify(bad)).toBe(400);
      expect(got.body.errors?.map((e) => e.extensions?.code)).toEqual(['BAD_REQUEST']);
      expect(received).toHaveLength(0);
    }
  });

  it('passes the subgraph’s IDEMPOTENCY_KEY_IN_USE on as 409 with Retry-After, and IDEMPOTENCY_KEY_REUSED as 422', async () => {
    answer = { status: 409, body: { errors: [{ message: 'still running', path: ['uploadDocument'], extensions: { code: 'IDEMPOTENCY_KEY_IN_USE', retryAfterSeconds: 1 } }], data: null } };
    const inUse = await send(UPLOAD, 'key-2');
    expect([inUse.status, inUse.retryAfter]).toEqual([409, '1']);
    expect(inUse.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_IN_USE']);
    answer = { status: 422, body: { errors: [{ message: 'reused', path: ['uploadDocument'], extensions: { code: 'IDEMPOTENCY_KEY_REUSED' } }], data: null } };
    const reused = await send(UPLOAD, 'key-2');
    expect([reused.status, reused.retryAfter]).toEqual([422, null]);
    expect(reused.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
  });
});
