/**
 * A subgraph's SERVICE_UNAVAILABLE reaches the gateway's client as SERVICE_UNAVAILABLE with HTTP
 * 503 and Retry-After, whether the subgraph answered it with a 503 (a request it refused whole)
 * or beside data; its other coded refusals (a 400 BAD_USER_INPUT) pass with their codes too,
 * where Apollo would report `<status>: <text>` as INTERNAL_SERVER_ERROR. Without services: a
 * production gateway on the in-memory bus over the real supergraph, its insights subgraph a
 * stand-in answering as core's subgraph factory does (that factory's own answers:
 * packages/core/test/unavailable*.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStandInGateway, type StandInGateway } from './fixtures/stand-in.ts';

const UNAVAILABLE = { message: 'the database is unavailable; retry in 1 s', extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1, dependency: 'database' } };

describe('the gateway answering a subgraph’s SERVICE_UNAVAILABLE', () => {
  let standIn: StandInGateway;

  beforeAll(async () => {
    standIn = await startStandInGateway(['insights', 'documents']);
  });
  afterAll(async () => {
    await standIn?.stop();
  });

  const query = (text: string) => standIn.post(text);

  it('answers 503 with Retry-After when the subgraph refused the request whole with a 503', async () => {
    standIn.answer({ status: 503, headers: { 'retry-after': '1' }, body: { errors: [UNAVAILABLE] } });
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([503, '1']);
    expect(body.errors).toEqual([{ message: UNAVAILABLE.message, extensions: { ...UNAVAILABLE.extensions, serviceName: 'insights' } }]);
  });

  it('answers 503 with Retry-After when the subgraph answered a field with it beside data', async () => {
    standIn.answer({ status: 503, headers: { 'retry-after': '1' }, body: { data: { stats: null }, errors: [{ ...UNAVAILABLE, path: ['stats'] }] } });
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([503, '1']);
    expect(body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
    // The same error from a subgraph that kept its status 200: what makes the 503 is the code.
    standIn.answer({ status: 200, body: { data: { stats: null }, errors: [{ ...UNAVAILABLE, path: ['stats'] }] } });
    expect((await query('{ stats { documents } }')).status).toBe(503);
  });

  it('passes a subgraph’s 400 BAD_USER_INPUT on with its code and field, not as INTERNAL_SERVER_ERROR', async () => {
    standIn.answer({ status: 400, body: { errors: [{ message: '`id` of document contains a NUL character (U+0000), which cannot be stored', extensions: { code: 'BAD_USER_INPUT', field: 'id' } }] } });
    const { status, retryAfter, body } = await query('{ document(id: "x") { title } }');
    expect([status, retryAfter]).toEqual([200, null]);
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'id' });
  });

  it('still reports a subgraph answer that is no GraphQL response as an internal error, masked', async () => {
    standIn.answer({ status: 502, body: '<html>Bad Gateway</html>' });
    const { status, retryAfter, body } = await query('{ stats { documents } }');
    expect([status, retryAfter]).toEqual([200, null]);
    expect(body.errors).toEqual([{ message: 'internal error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }]);
  });
});
