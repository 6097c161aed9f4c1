/**
 * Uploads safe to retry (issue 26): a mutation sent with an `Idempotency-Key` header, again with
 * the same key and body by the same user, gets the same answer (the same document and job) with no
 * second document, job or model call; the same key with another body is IDEMPOTENCY_KEY_REUSED
 * (422). The embedded system on PostgreSQL and RabbitMQ, analysing through an OpenAI-compatible test
 * server that counts the model calls. (A retry after the documents process died past its commit:
 * subgraphs/documents/test/idempotency.int.test.ts.)
 */
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import { servicesAvailable, waitFor } from '@tributary/core/testing';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id title file { sha256 } } job { id status } } }';

type Answer = { status: number; retryAfter: string | null; body: { data?: any; errors?: { message: string; extensions?: Record<string, unknown> }[] } };

const newKey = () => randomBytes(12).toString('base64url');

describe.skipIf(!(await servicesAvailable()))('uploads with an Idempotency-Key', () => {
  let ai: OpenAITestServer;
  let system: TestSystem;

  beforeAll(async () => {
    ai = await startOpenAITestServer({ apiKey: 'sk-test' });
    system = await startEmbeddedSystem({ realServices: true, env: { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: ai.baseURL, AI_MODEL: 'test-model' } });
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
    await ai?.close();
  }, 60_000);

  const answer = async (response: Response): Promise<Answer> => ({ status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Answer['body'] });
  const headersFor = async (tenant: string, key: string | undefined, user = 'user-1') => ({
    authorization: `Bearer ${await system.token({ tenant, sub: user })}`,
    ...(key !== undefined ? { 'idempotency-key': key } : {}),
  });
  const post = async (tenant: string, key: string | undefined, query: string, variables: Record<string, unknown>, user?: string) =>
    answer(await fetch(system.gateways[0]!, { method: 'POST', headers: { 'content-type': 'application/json', ...(await headersFor(tenant, key, user)) }, body: JSON.stringify({ query, variables }) }));
  const uploadText = (tenant: string, key: string | undefined, input: { title: string; content: string }, user?: string) => post(tenant, key, UPLOAD, { input }, user);
  const uploadFile = async (tenant: string, key: string | undefined, title: string, text: string) => {
    const form = new FormData();
    form.append('operations', JSON.stringify({ query: UPLOAD, variables: { input: { title, file: null } } }));
    form.append('map', JSON.stringify({ 0: ['variables.input.file'] }));
    form.append('0', new Blob([text], { type: 'text/plain' }), 'notes.txt');
    return answer(await fetch(system.gateways[0]!, { method: 'POST', headers: { ...(await headersFor(tenant, key)), 'apollo-require-preflight': 'true' }, body: form }));
  };
  /** As a client does: a 409 (the first attempt still running) is retried after its Retry-After. */
  const untilAnswered = async (send: () => Promise<Answer>, seen: { inUse: number }): Promise<Answer> => {
    for (;;) {
      const got = await send();
      if (got.status !== 409) return got;
      seen.inUse++;
      expect(got.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_IN_USE']);
      expect(got.retryAfter).toBe('1');
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  const count = (service: 'documents' | 'jobs' | 'analysis', table: string, tenant: string, where = '') =>
    system.count(service, `select count(*) as n from ${table} where tenant_id = '${tenant}'${where}`);
  const chatCalls = () => ai.requests.filter((r) => r.path.endsWith('/chat/completions')).length;

  it('makes 200 documents, 200 jobs and 200 model calls of 200 uploads each sent twice at once with its key, both answers naming the same document and job', async () => {
    const tenant = `idem-${randomBytes(4).toString('hex')}`;
    const callsBefore = chatCalls();
    const seen = { inUse: 0 };
    const pairs: [Answer, Answer][] = [];
    // Waves of 50 pairs (100 requests at once), every pair's two requests sent together.
    for (let wave = 0; wave < 4; wave++) {
      const sent = Array.from({ length: 50 }, (_, i) => {
        const n = wave * 50 + i;
        const key = newKey();
        const input = { title: `Report ${n}`, content: `Quarterly report number ${n}: shipments of part ${n} rose by ${n % 17} percent.` };
        const once = () => untilAnswered(() => uploadText(tenant, key, input), seen);
        return Promise.all([once(), once()]);
      });
      pairs.push(...(await Promise.all(sent)));
    }
    const documents = new Set<string>();
    const jobs = new Set<string>();
    for (const [a, b] of pairs) {
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      expect(b.status, JSON.stringify(b.body)).toBe(200);
      expect(a.body.errors).toBeUndefined();
      expect(b.body.data.uploadDocument).toEqual(a.body.data.uploadDocument);
      documents.add(a.body.data.uploadDocument.document.id);
      jobs.add(a.body.data.uploadDocument.job.id);
    }
    expect(documents.size).toBe(200);
    expect(jobs.size).toBe(200);

    await waitFor(async () => (await count('jobs', 'jobs', tenant, " and status = 'COMPLETED'")) >= 200, 120_000, '200 jobs completed');
    // Time for a duplicate to show up, were there one.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await count('documents', 'documents', tenant)).toBe(200);
    expect(await count('jobs', 'jobs', tenant)).toBe(200);
    expect(await count('analysis', 'analyses', tenant)).toBe(200);
    expect(chatCalls() - callsBefore).toBe(200);
    expect(await system.count('documents', `select count(*) as n from tributary_idempotency where scope like '%${tenant}%'`)).toBe(200);
    console.log(`idempotency: 400 uploads (200 keys, each sent twice at once): 200 documents, 200 jobs, 200 model calls; ${seen.inUse} answers of 409 IDEMPOTENCY_KEY_IN_USE retried`);
  }, 300_000);

  it('refuses the same key with another body as IDEMPOTENCY_KEY_REUSED (422), and keeps keys apart per user', async () => {
    const tenant = `idem-${randomBytes(4).toString('hex')}`;
    const key = newKey();
    const input = { title: 'Ferry timetable', content: 'The ferry leaves at nine and returns at five.' };
    const first = await uploadText(tenant, key, input);
    expect(first.status).toBe(200);

    const other = await uploadText(tenant, key, { ...input, content: 'The ferry leaves at ten.' });
    expect(other.status, JSON.stringify(other.body)).toBe(422);
    expect(other.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
    const retitled = await uploadText(tenant, key, { ...input, title: 'Ferry timetable (new)' });
    expect(retitled.status).toBe(422);

    // Another user's key of the same text is another key.
    const otherUser = await uploadText(tenant, key, input, 'user-2');
    expect(otherUser.status).toBe(200);
    expect(otherUser.body.data.uploadDocument.document.id).not.toBe(first.body.data.uploadDocument.document.id);
    expect(await count('documents', 'documents', tenant)).toBe(2);
  });

  it('answers a file upload sent again with its key with the same document and job, and refuses the key with another file', async () => {
    const tenant = `idem-${randomBytes(4).toString('hex')}`;
    const key = newKey();
    const text = 'Minutes of the harbour board: the new crane is due in spring.';
    const first = await uploadFile(tenant, key, 'Minutes', text);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const again = await uploadFile(tenant, key, 'Minutes', text);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.data.uploadDocument).toEqual(first.body.data.uploadDocument);
    expect(await count('documents', 'documents', tenant)).toBe(1);

    const otherFile = await uploadFile(tenant, key, 'Minutes', `${text} Amended.`);
    expect(otherFile.status).toBe(422);
    expect(otherFile.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
    expect(await count('documents', 'documents', tenant)).toBe(1);
  });

  it('behaves as before without a key, ignores a key on a query, and refuses a malformed key on a mutation (400)', async () => {
    const tenant = `idem-${randomBytes(4).toString('hex')}`;
    const input = { title: 'Weather', content: 'Rain in the morning, sun in the afternoon.' };
    const a = await uploadText(tenant, undefined, input);
    const b = await uploadText(tenant, undefined, input);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.body.data.uploadDocument.document.id).not.toBe(b.body.data.uploadDocument.document.id);
    expect(await count('documents', 'documents', tenant)).toBe(2);

    const query = await post(tenant, 'bad\tkey', '{ documents(first: 1) { edges { node { id } } } }', {});
    expect(query.status).toBe(200);
    expect(query.body.errors).toBeUndefined();

    for (const bad of ['x'.repeat(256), 'tab\tinside']) {
      const refused = await uploadText(tenant, bad, { ...input, title: 'Malformed key' });
      expect(refused.status).toBe(400);
      expect(refused.body.errors?.map((e) => e.extensions?.code)).toEqual(['BAD_REQUEST']);
      expect(refused.body.errors?.[0]?.message).toMatch(/Idempotency-Key/);
    }
    const refusedFile = await uploadFile(tenant, 'x'.repeat(256), 'Malformed key', 'Some text.');
    expect(refusedFile.status).toBe(400);
    expect(await count('documents', 'documents', tenant)).toBe(2);
  });
});

describe('uploads with an Idempotency-Key in pnpm dev mode (PGlite, one connection per service)', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startEmbeddedSystem();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('answers 20 uploads each sent twice at once with one document and job each, queueing the retry behind the first without a deadlock', async () => {
    const token = await system.token();
    const send = async (key: string, input: { title: string; content: string }) => {
      const response = await fetch(system.gateways[0]!, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
        body: JSON.stringify({ query: UPLOAD, variables: { input } }),
      });
      return { status: response.status, body: (await response.json()) as { data?: any; errors?: { extensions?: { code?: string } }[] } };
    };
    const pairs = await Promise.all(
      Array.from({ length: 20 }, (_, n) => {
        const key = newKey();
        const input = { title: `Dev ${n}`, content: `Note ${n} about the dev mode.` };
        return Promise.all([send(key, input), send(key, input)]);
      }),
    );
    for (const [a, b] of pairs) {
      expect([a.status, b.status], JSON.stringify([a.body, b.body])).toEqual([200, 200]);
      expect(b.body.data.uploadDocument).toEqual(a.body.data.uploadDocument);
    }
    expect(await system.count('documents', 'select count(*) as n from documents')).toBe(20);
    const key = newKey();
    expect((await send(key, { title: 'Once', content: 'First body.' })).status).toBe(200);
    const reused = await send(key, { title: 'Once', content: 'Another body.' });
    expect(reused.status).toBe(422);
    expect(reused.body.errors?.map((e) => e.extensions?.code)).toEqual(['IDEMPOTENCY_KEY_REUSED']);
    await waitFor(async () => (await system.count('analysis', "select count(*) as n from analyses where status = 'COMPLETED'")) >= 21, 60_000, 'the analyses');
    expect(await system.count('analysis', 'select count(*) as n from analyses')).toBe(21);
  }, 120_000);
});
