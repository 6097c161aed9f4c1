/**
 * The gateway's part of the Idempotency-Key: it forwards a mutation's key to the subgraph signed
 * with the caller's identity (and a query's not at all), refuses a malformed key on a mutation,
 * and passes the subgraph's IDEMPOTENCY_KEY_IN_USE (409, Retry-After) and IDEMPOTENCY_KEY_REUSED
 * (422) on with their status. Without services: a production gateway on the in-memory bus over the
 * real supergraph, its documents subgraph a stand-in that records what it receives. (The whole
 * system: e2e/test/idempotency.e2e.test.ts.)
 */
import { IdentityHeaders, verifyIdentity } from '@tributary/core/identity';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStandInGateway, type StandInGateway } from './fixtures/stand-in.ts';

const UPLOAD = 'mutation { uploadDocument(input: { title: "t", content: "c" }) { document { id } } }';

describe('the gateway and a mutation’s Idempotency-Key', () => {
  let standIn: StandInGateway;

  beforeAll(async () => {
    standIn = await startStandInGateway(['documents']);
  });
  afterAll(async () => {
    await standIn?.stop();
  });

  const send = (query: string, key?: string) => standIn.post(query, key !== undefined ? { 'idempotency-key': key } : {});

  it('forwards a mutation’s key, signed with the caller’s identity', async () => {
    standIn.answer({ status: 200, body: { data: { uploadDocument: { document: { id: 'd1' } } } } });
    await send(UPLOAD, 'key-1');
    expect(standIn.received).toHaveLength(1);
    expect(standIn.received[0]![IdentityHeaders.idempotencyKey]).toBe('key-1');
    expect(verifyIdentity(standIn.secret, standIn.received[0]!)).toEqual({ tenantId: 'tenant-a', userId: 'alice', idempotencyKey: 'key-1' });
    // Without a key: none forwarded.
    await send(UPLOAD);
    expect(standIn.received[0]![IdentityHeaders.idempotencyKey]).toBeUndefined();
  });

  it('ignores a key, even a malformed one, on a query', async () => {
    standIn.answer({ status: 200, body: { data: { document: null } } });
    const got = await send('{ document(id: "x") { id } }', 'bad\tkey');
    expect(got.status).toBe(200);
    expect(standIn.received[0]![IdentityHeaders.idempotencyKey]).toBeUndefined();
  });

  it('refuses a malformed key on a mutation with BAD_REQUEST (400), sending nothing to the subgraph', async () => {
    for (const bad of ['', 'x'.repeat(256), 'tab\tinside', 'ünïcode']) {
      const got = await send(UPLOAD, bad);
      expect(got.status, JSON.stringify(bad)).toBe(400);
      expect(got.body.errors?.map((e) => e.extensions?.code)).toEqual(['BAD_REQUEST']);
      expect(standIn.received).toHaveLength(0);
    }
  });

  it('passes the subgraph’s IDEMPOTENCY_KEY_IN_USE on as 409 with Retry-After, and IDEMPOTENCY_KEY_REUSED as 422', async () => {
    standIn.answer({ status: 409, body: { errors: [{ message: 'still running', path: ['uploadDocument'], extensions: { code: 'IDEMPOTENCY_KEY_IN_USE', retryAfterSeconds: 1 } }], data: null } });
    const inUse = await send(UPLOAD, 'key-2');
    expect([inUse.status, inUse.retryAfter]).toEqual([409, '1']);
    expect(inUse.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_IN_USE']);
    standIn.answer({ status: 422, body: { errors: [{ message: 'reused', path: ['uploadDocument'], extensions: { code: 'IDEMPOTENCY_KEY_REUSED' } }], data: null } });
    const reused = await send(UPLOAD, 'key-2');
    expect([reused.status, reused.retryAfter]).toEqual([422, null]);
    expect(reused.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
  });
});
