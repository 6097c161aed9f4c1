/**
 * While a service's database is unreachable, the whole system answers the client SERVICE_UNAVAILABLE
 * with HTTP 503 and Retry-After, never INTERNAL_SERVER_ERROR, for queries, uploads as text and
 * uploads as files alike; once it is back, the same upload sent again succeeds and nothing of the
 * refused ones was stored. The embedded system on PostgreSQL and RabbitMQ, the documents service's
 * database reached through a TCP proxy of the test's own, which the test takes down.
 */
import { dropDatabase } from '@tributary/core/db';
import { servicesAvailable, startTcpProxy, TEST_DATABASE_URL, testNamespace, waitFor, type TcpProxy } from '@tributary/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id } } }';
const DOCUMENTS = '{ documents(first: 50) { edges { node { id title } } } }';
const TEXT = 'Tidal turbines in the strait delivered steady power through the winter storms.';

type Answer = { status: number; retryAfter: string | null; body: { data?: any; errors?: { message: string; extensions?: Record<string, unknown> }[] } };

describe.skipIf(!(await servicesAvailable()))('the system while a database is unreachable', () => {
  const dbName = testNamespace('tributary_documents_proxied');
  let proxy: TcpProxy;
  let system: TestSystem;
  let token: string;

  beforeAll(async () => {
    const server = new URL(TEST_DATABASE_URL);
    proxy = await startTcpProxy({ host: server.hostname, port: Number(server.port || 5432) });
    const proxied = new URL(TEST_DATABASE_URL);
    proxied.port = String(proxy.port);
    proxied.pathname = `/${dbName}`;
    system = await startEmbeddedSystem({ realServices: true, env: { NODE_ENV: 'production', DOCUMENTS_DATABASE_URL: proxied.toString() } });
    token = await system.token();
  }, 120_000);
  afterAll(async () => {
    await proxy?.up();
    await system?.stop();
    await proxy?.close();
    await dropDatabase(TEST_DATABASE_URL, dbName);
  }, 60_000);

  const answer = async (response: Response): Promise<Answer> => ({ status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Answer['body'] });
  const post = async (query: string, variables: Record<string, unknown> = {}) =>
    answer(await fetch(system.gateways[0]!, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ query, variables }) }));
  const uploadFile = async (title: string) => {
    const form = new FormData();
    form.append('operations', JSON.stringify({ query: UPLOAD, variables: { input: { title, file: null } } }));
    form.append('map', JSON.stringify({ 0: ['variables.input.file'] }));
    form.append('0', new Blob([TEXT], { type: 'text/plain' }), 'notes.txt');
    return answer(await fetch(system.gateways[0]!, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'apollo-require-preflight': 'true' }, body: form }));
  };
  const unavailable = (what: string, got: Answer) => {
    expect(got.status, `${what}: ${JSON.stringify(got.body)}`).toBe(503);
    expect(got.retryAfter, what).toBe('1');
    expect(got.body.errors?.map((e) => e.extensions?.code), what).toEqual(['SERVICE_UNAVAILABLE']);
    expect(got.body.errors?.[0]?.message, what).toBe('the database is unavailable; retry in 1 s');
  };

  it('answers SERVICE_UNAVAILABLE with 503 and Retry-After to reads, text uploads and file uploads, and takes the upload again once the database is back', async () => {
    const first = await post(UPLOAD, { input: { title: 'Before', content: TEXT } });
    expect(first.body.errors).toBeUndefined();

    await proxy.down();
    unavailable('a read', await post(DOCUMENTS));
    unavailable('a text upload', await post(UPLOAD, { input: { title: 'Refused text', content: TEXT } }));
    unavailable('a file upload', await uploadFile('Refused file'));
    // A part of the API the database is not needed for is still served beside it.
    expect((await post('{ stats { documents } }')).status).toBe(200);

    await proxy.up();
    await waitFor(async () => (await post(DOCUMENTS)).status === 200, 15_000, 'the documents database to be reached again');
    const again = await post(UPLOAD, { input: { title: 'Refused text', content: TEXT } });
    expect(again.body.errors).toBeUndefined();
    const file = await uploadFile('Refused file');
    expect(file.body.errors).toBeUndefined();
    const titles = (await post(DOCUMENTS)).body.data.documents.edges.map((e: { node: { title: string } }) => e.node.title).sort();
    expect(titles).toEqual(['Before', 'Refused file', 'Refused text']);
  });
});
