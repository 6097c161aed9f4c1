import { startOpenAITestServer } from '@tributary/ai/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id } } }';
const DONE = `subscription($id: ID!) {
  jobCompleted(jobId: $id) {
    status error { code message }
    document { id analysis { summary themes { name score } provider model tokens { prompt completion } cached } }
  }
}`;

async function analyse(system: TestSystem, title: string, content: string, token?: string) {
  const uploaded = await system.query(UPLOAD, { input: { title, content } }, token ? { token } : {});
  const { job, document } = uploaded.data.uploadDocument;
  const [message] = await collect(system.ws(token ? { token } : {}), DONE, { id: job.id });
  return { documentId: document.id as string, job: message!.data.jobCompleted };
}

describe('analysis through an OpenAI-compatible endpoint (pnpm dev mode)', () => {
  let server: Awaited<ReturnType<typeof startOpenAITestServer>>;
  let system: TestSystem;
  beforeAll(async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test' });
    system = await startEmbeddedSystem({ env: { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model' } });
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
    await server?.close();
  });

  it('runs an upload end to end through the endpoint, and serves the same prompt again from the cache', async () => {
    const text = 'Offshore wind farms expanded quickly. Turbine makers reported record orders and strong margins.';
    const first = await analyse(system, 'Wind', text);
    expect(first.job.status).toBe('COMPLETED');
    expect(first.job.document.analysis).toMatchObject({ provider: 'openai', model: 'test-model', cached: false });
    expect(first.job.document.analysis.tokens.prompt).toBeGreaterThan(0);
    const calls = server.requests.filter((r) => r.path.endsWith('/chat/completions')).length;
    expect(calls).toBe(1);
    expect(server.requests.some((r) => r.path.endsWith('/embeddings'))).toBe(true);

    const again = await analyse(system, 'Wind', text);
    expect(again.job.document.analysis).toMatchObject({ provider: 'openai', cached: true, tokens: { prompt: 0, completion: 0 } });
    expect(server.requests.filter((r) => r.path.endsWith('/chat/completions')).length).toBe(calls);
  });

  it('finds similar documents within the tenant only', async () => {
    const a = await analyse(system, 'Solar A', 'Solar panels on rooftops cut household energy bills. Solar adoption keeps rising.');
    const b = await analyse(system, 'Solar B', 'Rooftop solar panels keep spreading; solar energy bills fall for households.');
    const c = await analyse(system, 'Cooking', 'Slow-cooked beans with garlic and rosemary make a cheap, hearty dinner.');
    const similar = await system.query('query($id: ID!) { similarDocuments(documentId: $id, first: 5) { score document { id title } } }', { id: a.documentId });
    const ids = similar.data.similarDocuments.map((s: { document: { id: string } }) => s.document.id);
    expect(ids.indexOf(b.documentId)).toBeLessThan(ids.indexOf(c.documentId));
    expect(similar.data.similarDocuments[0].document.title).toBe('Solar B');

    const other = await system.token({ tenant: 'tenant-z', sub: 'zoe' });
    const probe = await system.query('query($id: ID!) { similarDocuments(documentId: $id) { score } }', { id: a.documentId }, { token: other });
    expect(probe.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    const mine = await analyse(system, 'Solar Z', 'Solar panels on rooftops cut household energy bills.', other);
    const fromZ = await system.query('query($id: ID!) { similarDocuments(documentId: $id) { document { id } } }', { id: mine.documentId }, { token: other });
    expect(fromZ.data.similarDocuments).toEqual([]);
  });
});

describe('a tiny daily token budget', () => {
  let server: Awaited<ReturnType<typeof startOpenAITestServer>>;
  let system: TestSystem;
  beforeAll(async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test' });
    system = await startEmbeddedSystem({ env: { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_DAILY_TOKEN_BUDGET: '50' } });
  }, 60_000);
  afterAll(async () => {
    await system?.stop();
    await server?.close();
  });

  it('ends the job FAILED with BUDGET_EXCEEDED, without retrying or calling the provider', async () => {
    const { job } = await analyse(system, 'Expensive', 'A long report about budgets and spending that would need many tokens to analyse properly.');
    expect(job).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    const read = await system.query('query { jobs(status: FAILED) { edges { node { attempts } } } }');
    expect(read.data.jobs.edges[0].node.attempts).toBe(1);
    expect(server.requests.filter((r) => r.path.endsWith('/chat/completions'))).toHaveLength(0);
  });
});
