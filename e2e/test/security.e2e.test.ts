import { randomBytes } from 'node:crypto';
import { signIdentity } from '@tributary/core';
import { waitFor } from '@tributary/core/testing';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const AUDIENCE = 'tributary-api';
const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id } } }';
const TEXT = 'Confidential merger plans for the northern region. Revenue synergies look strong.';

describe('security', () => {
  let system: TestSystem;
  let alice: string;
  let bob: string;
  const code = (response: { errors?: { extensions?: { code?: string } }[] }) => response.errors?.[0]?.extensions?.code;

  beforeAll(async () => {
    system = await startEmbeddedSystem({
      env: { NODE_ENV: 'production', AUTH_AUDIENCE: AUDIENCE, UPLOAD_RATE_LIMIT_PER_MINUTE: '5', CORS_ORIGINS: 'https://app.example.com', QUERY_MAX_DEPTH: '8', QUERY_MAX_COST: '500' },
    });
    alice = await system.token({ tenant: 'tenant-a', sub: 'alice', audience: AUDIENCE });
    bob = await system.token({ tenant: 'tenant-b', sub: 'bob', audience: AUDIENCE });
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
  });

  async function raw(body: string | Buffer, headers: Record<string, string> = {}) {
    const response = await fetch(system.gateways[0]!, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}`, ...headers }, body: typeof body === 'string' ? body : new Uint8Array(body) });
    return { status: response.status, text: await response.text() };
  }

  it('keeps tenant B away from tenant A’s documents, analyses, jobs, themes and subscriptions', async () => {
    const uploaded = await system.query(UPLOAD, { input: { title: 'A secret', content: TEXT } }, { token: alice });
    const { document, job } = uploaded.data.uploadDocument;
    await collect(system.ws({ token: alice }), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status } }', { id: job.id });
    await waitFor(async () => (await system.query('{ stats { analyzed } }', {}, { token: alice })).data?.stats.analyzed === 1, 10_000, 'insights for A');

    const asA = await system.query('query($d: ID!, $j: ID!) { document(id: $d) { title analysis { summary } } job(id: $j) { status } }', { d: document.id, j: job.id }, { token: alice });
    expect(asA.data.document.analysis.summary.length).toBeGreaterThan(0);
    expect(asA.data.job.status).toBe('COMPLETED');

    const asB = await system.query('query($d: ID!, $j: ID!) { document(id: $d) { title } job(id: $j) { status } }', { d: document.id, j: job.id }, { token: bob });
    expect(asB.data).toEqual({ document: null, job: null });
    const listsB = await system.query('{ documents { edges { node { id } } } jobs { edges { node { id } } } themes { name } stats { documents analyzed failed } }', {}, { token: bob });
    expect(listsB.data).toEqual({ documents: { edges: [] }, jobs: { edges: [] }, themes: [], stats: { documents: 0, analyzed: 0, failed: 0 } });

    // A subscription to another tenant's job looks exactly like one to a job that does not exist.
    const [message] = await collect(system.ws({ token: bob }), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { title } } }', { id: job.id }, 15_000);
    expect(message!.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect(JSON.stringify(message)).not.toContain('A secret');
  });

  it('refuses a missing, expired, wrongly signed or wrong-audience token with UNAUTHENTICATED', async () => {
    const secret = new TextEncoder().encode(system.secrets.auth);
    const now = Math.floor(Date.now() / 1000);
    const tokens = {
      missing: null,
      garbage: 'not-a-jwt',
      expired: await new SignJWT({ tenant: 'tenant-a' }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setAudience(AUDIENCE).setIssuedAt(now - 7200).setExpirationTime(now - 3600).sign(secret),
      wrongSignature: await new SignJWT({ tenant: 'tenant-a' }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setAudience(AUDIENCE).setExpirationTime('1h').sign(randomBytes(32)),
      wrongAudience: await system.token({ tenant: 'tenant-a', sub: 'alice', audience: 'someone-else' }),
      noTenant: await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setAudience(AUDIENCE).setExpirationTime('1h').sign(secret),
      algNone: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'alice', tenant: 'tenant-a', aud: AUDIENCE })).toString('base64url')}.`,
    };
    for (const [name, token] of Object.entries(tokens)) {
      const response = await fetch(system.gateways[0]!, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify({ query: '{ stats { documents } }' }) });
      expect(response.status, name).toBe(401);
      const body = (await response.json()) as { errors: { extensions: { code: string } }[] };
      expect(body.errors[0]!.extensions.code, name).toBe('UNAUTHENTICATED');
    }
  });

  it('refuses requests to every subgraph without a valid, fresh gateway signature', async () => {
    const identity = { tenantId: 'tenant-a', userId: 'alice' };
    const cases: Record<string, Record<string, string>> = {
      unsigned: { 'x-tributary-tenant': 'tenant-a', 'x-tributary-user': 'alice' },
      forged: signIdentity(randomBytes(32).toString('base64url'), identity),
      stale: signIdentity(system.secrets.internal, identity, Date.now() - 5 * 60_000),
      tampered: { ...signIdentity(system.secrets.internal, identity), 'x-tributary-tenant': 'tenant-b' },
    };
    for (const [service, url] of Object.entries(system.subgraphs)) {
      for (const [name, headers] of Object.entries(cases)) {
        const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query: '{ __typename }' }) });
        expect(response.status, `${service} ${name}`).toBe(401);
        expect(((await response.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('UNAUTHENTICATED');
      }
      const good = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...signIdentity(system.secrets.internal, identity) }, body: JSON.stringify({ query: '{ __typename }' }) });
      expect(good.status, `${service} signed`).toBe(200);
    }
  });

  it('refuses too-deep, too-costly and alias-bombing queries with codes', async () => {
    const deep = await system.query('{ documents { edges { node { job { document { job { document { job { document { title } } } } } } } } } }', {}, { token: alice });
    expect(code(deep)).toBe('QUERY_TOO_DEEP');
    const aliases = Array.from({ length: 50 }, (_, i) => `a${i}: stats { documents }`).join(' ');
    expect(code(await system.query(`{ ${aliases} }`, {}, { token: alice }))).toBe('TOO_MANY_ALIASES');
    // Within the depth and alias limits, but every alias fans out through lists and entities.
    const costly = Array.from({ length: 12 }, (_, i) => `q${i}: documents { edges { node { job { document { title content job { status } } } } } }`).join(' ');
    const costlyResponse = await system.query(`{ ${costly} }`, {}, { token: alice });
    expect(code(costlyResponse)).toBe('QUERY_TOO_COSTLY');
  });

  it('refuses an oversize body and an oversize upload, and stores nothing', async () => {
    const before = await system.count('documents', 'select count(*) as n from documents');
    const huge = await raw(JSON.stringify({ query: UPLOAD, variables: { input: { title: 'Big', content: 'x'.repeat(3 * 1024 * 1024) } } }));
    expect(huge.status).toBe(413);
    expect(JSON.parse(huge.text).errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
    const big = await system.query(UPLOAD, { input: { title: 'Big', content: 'x'.repeat(1024 * 1024 + 10) } }, { token: alice });
    expect(code(big)).toBe('BAD_USER_INPUT');
    expect(await system.count('documents', 'select count(*) as n from documents')).toBe(before);
    expect(await system.count('documents', 'select count(*) as n from tributary_outbox')).toBe(before);
  });

  it('trips the per-user upload rate limit, for aliases too, without touching other users', async () => {
    const carol = await system.token({ tenant: 'tenant-c', sub: 'carol', audience: AUDIENCE });
    const dave = await system.token({ tenant: 'tenant-c', sub: 'dave', audience: AUDIENCE });
    const many = Array.from({ length: 6 }, (_, i) => `u${i}: uploadDocument(input: { title: "t${i}", content: "text ${i}" }) { job { id } }`).join(' ');
    const bombed = await system.query(`mutation { ${many} }`, {}, { token: carol });
    expect(code(bombed)).toBe('RATE_LIMITED');
    const codes: (string | undefined)[] = [];
    for (let i = 0; i < 6; i++) codes.push(code(await system.query(UPLOAD, { input: { title: `t${i}`, content: 'text' } }, { token: carol })));
    expect(codes.slice(0, 5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(codes[5]).toBe('RATE_LIMITED');
    expect(code(await system.query(UPLOAD, { input: { title: 'ok', content: 'text' } }, { token: dave }))).toBeUndefined();
  });

  it('authenticates graphql-ws in connection_init and closes the socket when the token expires', async () => {
    const closeCode = (params: Record<string, unknown>) =>
      new Promise<number>((resolve) => {
        const socket = new WebSocket(system.gateways[0]!.replace(/^http/, 'ws'), 'graphql-transport-ws');
        socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: params })));
        socket.on('close', (c) => resolve(c));
      });
    expect(await closeCode({})).toBe(4403);
    expect(await closeCode({ authorization: 'Bearer nope' })).toBe(4403);
    const shortLived = await system.token({ tenant: 'tenant-a', sub: 'alice', audience: AUDIENCE, expiresIn: '2s' });
    const started = Date.now();
    expect(await closeCode({ authorization: `Bearer ${shortLived}` })).toBe(4403);
    expect(Date.now() - started).toBeGreaterThan(500); // accepted first, closed at expiry
  });

  it('answers CORS preflights for configured origins only, never with a wildcard and credentials', async () => {
    const preflight = (origin: string) => fetch(system.gateways[0]!, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
    const allowed = await preflight('https://app.example.com');
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(allowed.headers.get('access-control-allow-credentials')).toBe('true');
    const other = await preflight('https://evil.example.com');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('survives a fuzz pass: no 5xx, no stack trace, no crash, nothing stored', async () => {
    const before = await system.count('documents', 'select count(*) as n from documents');
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)]!;
    const tokens = ['{', '}', '(', ')', 'query', 'mutation', 'subscription', 'fragment', 'on', '...', '$x', ':', '@skip', 'uploadDocument', 'documents', 'edges', 'node', 'input', '"', '"""', '#', '!', '[', ']', '=', '1e999', 'null', '__schema', '__type', 'id', '\u0000', '\uD800'];
    const bodies: (string | Buffer)[] = [
      '{', '[]', 'null', '"query"', '{"query": 5}', '{"query": null}', '{"query": "{ stats { documents } }", "variables": "nope"}',
      '{"query": "query($n: Int) { documents(first: $n) { edges { cursor } } }", "variables": {"n": "many"}}',
      '{"query": "mutation($i: UploadDocumentInput!) { uploadDocument(input: $i) { job { id } } }", "variables": {"i": {"title": 5, "content": []}}}',
      '{"query": "mutation($i: UploadDocumentInput!) { uploadDocument(input: $i) { job { id } } }", "variables": {"i": {"title": "", "content": ""}}}',
      JSON.stringify({ query: `{ documents(after: "${'A'.repeat(100_000)}") { edges { cursor } } }` }),
      JSON.stringify({ query: `{ ${'a'.repeat(200_000)} }` }),
      JSON.stringify({ query: '{ stats { documents } }', operationName: 'x'.repeat(10_000) }),
      Buffer.concat([Buffer.from('{"query": "{ stats { documents } }", "x": "'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('"}')]),
      Buffer.from([0xc0, 0xaf, 0xed, 0xa0, 0x80]),
      `{"query": "${'{'.repeat(5000)}"}`,
    ];
    for (let i = 0; i < 200; i++) bodies.push(JSON.stringify({ query: Array.from({ length: 1 + Math.floor(random() * 30) }, () => pick(tokens)).join(' ') }));
    for (const body of bodies) {
      const { status, text } = await raw(body);
      expect(status, String(body).slice(0, 80)).toBeLessThan(500);
      expect(text).not.toMatch(/stacktrace|\bat [\w.<>]+ \(|node_modules/);
    }
    for (const path of ['/graphql?query=%7B', '/graphql?query={stats{documents}}&variables=%ZZ', '/%E0%A4%A', '/nothing']) {
      const response = await fetch(new URL(path, system.gateways[0]!), { headers: { authorization: `Bearer ${alice}`, 'apollo-require-preflight': '1' } });
      expect(response.status, path).toBeLessThan(500);
    }
    expect((await fetch(new URL('/health', system.gateways[0]!))).status).toBe(200);
    expect(await system.count('documents', 'select count(*) as n from documents')).toBe(before);
  });
});
