import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
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

/** An embedded system (pnpm dev mode) on a fresh OpenAI-compatible test server, for one describe block. */
function aiSystem(serverOptions: Parameters<typeof startOpenAITestServer>[0], env: Record<string, string>) {
  const ai = {} as { server: OpenAITestServer; system: TestSystem };
  beforeAll(async () => {
    ai.server = await startOpenAITestServer({ apiKey: 'sk-test', ...serverOptions });
    ai.system = await startEmbeddedSystem({ env: { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: ai.server.baseURL, ...env } });
  }, 60_000);
  afterAll(async () => {
    await ai.system?.stop();
    await ai.server?.close();
  });
  return ai;
}

describe('analysis through an OpenAI-compatible endpoint (pnpm dev mode)', () => {
  const ai = aiSystem({}, { AI_MODEL: 'test-model' });

  it('runs an upload end to end through the endpoint, and serves the same prompt again from the cache', async () => {
    const text = 'Offshore wind farms expanded quickly. Turbine makers reported record orders and strong margins.';
    const first = await analyse(ai.system, 'Wind', text);
    expect(first.job.status).toBe('COMPLETED');
    expect(first.job.document.analysis).toMatchObject({ provider: 'openai', model: 'test-model', cached: false });
    expect(first.job.document.analysis.tokens.prompt).toBeGreaterThan(0);
    const calls = ai.server.requests.filter((r) => r.path.endsWith('/chat/completions')).length;
    expect(calls).toBe(1);
    expect(ai.server.requests.some((r) => r.path.endsWith('/embeddings'))).toBe(true);

    const again = await analyse(ai.system, 'Wind', text);
    expect(again.job.document.analysis).toMatchObject({ provider: 'openai', cached: true, tokens: { prompt: 0, completion: 0 } });
    expect(ai.server.requests.filter((r) => r.path.endsWith('/chat/completions')).length).toBe(calls);
  });

  it('finds similar documents within the tenant only', async () => {
    const a = await analyse(ai.system, 'Solar A', 'Solar panels on rooftops cut household energy bills. Solar adoption keeps rising.');
    const b = await analyse(ai.system, 'Solar B', 'Rooftop solar panels keep spreading; solar energy bills fall for households.');
    const c = await analyse(ai.system, 'Cooking', 'Slow-cooked beans with garlic and rosemary make a cheap, hearty dinner.');
    const similar = await ai.system.query('query($id: ID!) { similarDocuments(documentId: $id, first: 5) { score document { id title } } }', { id: a.documentId });
    const ids = similar.data.similarDocuments.map((s: { document: { id: string } }) => s.document.id);
    expect(ids.indexOf(b.documentId)).toBeLessThan(ids.indexOf(c.documentId));
    expect(similar.data.similarDocuments[0].document.title).toBe('Solar B');

    const other = await ai.system.token({ tenant: 'tenant-z', sub: 'zoe' });
    const probe = await ai.system.query('query($id: ID!) { similarDocuments(documentId: $id) { score } }', { id: a.documentId }, { token: other });
    expect(probe.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    const mine = await analyse(ai.system, 'Solar Z', 'Solar panels on rooftops cut household energy bills.', other);
    const fromZ = await ai.system.query('query($id: ID!) { similarDocuments(documentId: $id) { document { id } } }', { id: mine.documentId }, { token: other });
    expect(fromZ.data.similarDocuments).toEqual([]);
  });
});

describe('a tiny daily token budget', () => {
  const ai = aiSystem({}, { AI_DAILY_TOKEN_BUDGET: '50' });

  it('ends the job FAILED with BUDGET_EXCEEDED, without retrying or calling the provider', async () => {
    const { job } = await analyse(ai.system, 'Expensive', 'A long report about budgets and spending that would need many tokens to analyse properly.');
    expect(job).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    const read = await ai.system.query('query { jobs(status: FAILED) { edges { node { attempts } } } }');
    expect(read.data.jobs.edges[0].node.attempts).toBe(1);
    expect(ai.server.requests.filter((r) => r.path.endsWith('/chat/completions'))).toHaveLength(0);
  });
});

/** A long report of numbered paragraphs, so a test can tell which of its text reached the model. */
function longReport(bytes: number): { text: string; markers: string[] } {
  const markers: string[] = [];
  const paragraphs: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const marker = `[P${String(i).padStart(5, '0')}]`;
    const paragraph = `${marker} Revenue in region ${i % 17} grew while costs fell. The team shipped feature ${i} on time, and customers praised the support they got. Churn dropped again this quarter.`;
    markers.push(marker);
    paragraphs.push(paragraph);
    size += paragraph.length + 2;
  }
  return { text: paragraphs.join('\n\n'), markers };
}

const PROGRESS = 'subscription($id: ID!) { jobUpdated(jobId: $id) { status progress { done total } } }';

describe('a long document (300 kB) through an OpenAI-compatible endpoint', () => {
  // Each call takes a while and two run at once, so the chunks finish one after another.
  const ai = aiSystem({ latencyMs: 150 }, { AI_MODEL: 'test-model', ANALYSIS_CONCURRENCY: '2' });

  it('analyses the whole text in chunks, reports progress, combines one analysis and counts every call', async () => {
    const { text, markers } = longReport(300_000);
    const uploaded = await ai.system.query(UPLOAD, { input: { title: 'Annual report', content: text } });
    expect(uploaded.errors).toBeUndefined();
    const id = uploaded.data.uploadDocument.job.id as string;
    const [updates, [done]] = await Promise.all([
      collect(ai.system.ws(), PROGRESS, { id }, 120_000),
      collect(ai.system.ws(), 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { summary themes { name } keywords sentiment { label } tokens { prompt completion } chunks truncated } } } }', { id }, 120_000),
    ]);
    const analysis = done!.data.jobCompleted.document.analysis;
    expect(done!.data.jobCompleted.status).toBe('COMPLETED');
    const chats = ai.server.requests.filter((r) => r.endpoint === 'chat');
    // The chunks, then one call combining their summaries.
    expect(analysis.chunks).toBeGreaterThan(5);
    expect(analysis.truncated).toBe(false);
    expect(chats).toHaveLength(analysis.chunks + 1);
    // Every paragraph of the text reached the model in some prompt.
    const prompts = chats.map((r) => r.body.messages.map((m: { content: string }) => m.content).join('\n')).join('\n');
    const missing = markers.filter((m) => !prompts.includes(m));
    expect(missing).toEqual([]);
    // One combined analysis, tokens of every call counted (the server's usage: a token per 4 characters per message).
    expect(analysis.summary.length).toBeGreaterThan(0);
    expect(analysis.themes.length).toBeGreaterThan(0);
    const prompt = chats.reduce((sum, r) => sum + r.body.messages.reduce((s: number, m: { content: string }) => s + Math.ceil(m.content.length / 4), 0), 0);
    expect(analysis.tokens.prompt).toBe(prompt);
    // Progress was visible while it ran: calls done of chunks + 1.
    const progress = updates.map((m) => m.data?.jobUpdated.progress).filter(Boolean);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every((p: { total: number }) => p.total === analysis.chunks + 1), JSON.stringify({ progress, chunks: analysis.chunks })).toBe(true);
    expect(progress.some((p: { done: number; total: number }) => p.done < p.total), JSON.stringify(progress)).toBe(true);
  }, 150_000);
});

describe('a long document over the remaining budget', () => {
  const ai = aiSystem({}, { AI_DAILY_TOKEN_BUDGET: '30000' });

  it('is refused with BUDGET_EXCEEDED before any call, though its first chunks would fit', async () => {
    const { text } = longReport(300_000);
    const { job } = await analyse(ai.system, 'Too long for the budget', text);
    expect(job).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    expect(ai.server.requests.filter((r) => r.endpoint === 'chat')).toHaveLength(0);
  });
});
