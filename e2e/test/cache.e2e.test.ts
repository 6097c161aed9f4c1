import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OfflineAnalyzer, type Analyzer } from '@tributary/ai';
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import { closeBrokerConnections, servicesAvailable, waitFor } from '@tributary/core/testing';
import { collect, deployedBrokers, startEmbeddedSystem, startProcessSystem, type GraphQLResponse, type TestSystem } from './fixtures/system.ts';

const CACHE_ENV = { GATEWAY_CACHE_TYPES: 'Job,Document,Stats,ThemeStat' };
const UPLOAD = 'mutation Upload($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id } } }';
const JOB = 'query Job($id: ID!) { job(id: $id) { id status attempts document { id title } } }';
const DOCUMENT = 'query Document($id: ID!) { document(id: $id) { id title analysis { summary } } }';
const JOB_UPDATED = 'subscription Updated($jobId: ID!) { jobUpdated(jobId: $jobId) { id status } }';
const DOCUMENTS = '{ documents(first: 50) { edges { node { id title } } } }';
const RANK: Record<string, number> = { QUEUED: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2 };
const TEXT = 'Solar and wind projects delivered record capacity this year, while battery storage costs fell again and grid operators expanded transmission.';

/** A query over HTTP, with the gateway's cache verdict (`x-tributary-cache`). */
async function read<T = any>(system: TestSystem, query: string, variables: Record<string, unknown> = {}, tenant?: string): Promise<{ body: GraphQLResponse<T>; cache: string | null }> {
  const token = await system.token(tenant ? { tenant } : {});
  const response = await fetch(system.gateways[0]!, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { body: (await response.json()) as GraphQLResponse<T>, cache: response.headers.get('x-tributary-cache') };
}

async function upload(system: TestSystem, title: string): Promise<{ documentId: string; jobId: string }> {
  const response = await system.query(UPLOAD, { input: { title, content: TEXT } });
  expect(response.errors).toBeUndefined();
  return { documentId: response.data.uploadDocument.document.id, jobId: response.data.uploadDocument.job.id };
}

// In one process the pipeline outruns the first read; a slower analyzer lets reads see (and
// cache) the job unfinished, which is what the test is about.
const offline = new OfflineAnalyzer();
const slowAnalyzer: Analyzer = { provider: offline.provider, model: offline.model, analyze: async (input, options) => (await sleep(400), offline.analyze(input, options)) };

const modes: [string, () => Promise<TestSystem>][] = [
  ['embedded (in-memory bus)', () => startEmbeddedSystem({ env: CACHE_ENV, analysis: { analyzer: slowAnalyzer } })],
];
let slowModel: OpenAITestServer | undefined;
const available = await servicesAvailable();
if (available) {
  for (const broker of await deployedBrokers()) {
    modes.push([
      `separate processes on PostgreSQL and ${broker.name}`,
      async () => {
        // The same for processes: a model that answers after 400 ms (the OpenAI-compatible test
        // server, over the real wire) keeps a job RUNNING long enough for repeat reads to be cached.
        slowModel = await startOpenAITestServer({ apiKey: 'sk-test', latencyMs: 400 });
        return startProcessSystem({ gatewayEnv: CACHE_ENV, serviceEnv: { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: slowModel.baseURL }, eventBusUrl: broker.url });
      },
    ]);
  }
}

describe.skipIf(!available).each(modes)('the event-invalidated cache, %s', (name, start) => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await start();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
    await slowModel?.close();
    slowModel = undefined;
  }, 60_000);

  it('never answers a read that starts after a jobUpdated message with an older state, while serving repeats from the cache', async () => {
    // Whether a read was answered from the cache with a state a later event replaced.
    let exercised = false;
    // At least three rounds, and more until one shows the cache serving a state an event later
    // replaced: a fast pipeline can finish a job before a repeat read lands between two changes.
    for (let round = 0; round < 3 || (!exercised && round < 12); round++) {
      const { documentId, jobId } = await upload(system, `race ${round}`);
      // Time each message arrives, and each read starts: a read that starts after a message must
      // show that state or a later one (the gateway drops the cached result before it sends).
      const messages: { at: number; status: string }[] = [];
      const finished = new Promise<void>((resolve, reject) => {
        system.ws().subscribe<{ jobUpdated: { status: string } }>(
          { query: JOB_UPDATED, variables: { jobId } },
          {
            next: (message) => messages.push({ at: performance.now(), status: message.data!.jobUpdated.status }),
            error: reject,
            complete: resolve,
          },
        );
      });
      let done = false;
      void finished.then(() => sleep(100)).then(() => (done = true));
      // Two readers: the job (jobs subgraph) and the document's analysis (analysis subgraph,
      // which in one process waits while the analysis holds its database).
      const readLoop = async <T>(query: string, variables: Record<string, unknown>, pick: (data: any) => T) => {
        const reads: { startedAt: number; value: T; cache: string | null }[] = [];
        while (!done) {
          const startedAt = performance.now();
          const { body, cache } = await read(system, query, variables);
          expect(body.errors).toBeUndefined();
          reads.push({ startedAt, value: pick(body.data), cache });
        }
        return reads;
      };
      const [jobReads, documentReads] = await Promise.all([
        readLoop(JOB, { id: jobId }, (data) => data.job?.status as string | undefined),
        readLoop(DOCUMENT, { id: documentId }, (data) => data.document.analysis !== null),
      ]);
      await finished;

      expect(messages.at(-1)!.status).toBe('COMPLETED');
      const lastMessageBefore = (at: number) => messages.filter((m) => m.at < at).at(-1);
      for (const r of jobReads) {
        const before = lastMessageBefore(r.startedAt);
        if (!before) continue;
        expect(r.value, `a read that started after the ${before.status} message`).toBeDefined();
        expect(RANK[r.value!], `a read that started after the ${before.status} message`).toBeGreaterThanOrEqual(RANK[before.status]!);
      }
      // analysis.completed is committed (and reaches the gateway) before the job is COMPLETED.
      for (const r of documentReads) if (lastMessageBefore(r.startedAt)?.status === 'COMPLETED') expect(r.value, 'analysis after COMPLETED').toBe(true);
      expect(jobReads.at(-1)?.value).toBe('COMPLETED');
      expect(documentReads.at(-1)?.value).toBe(true);
      exercised ||= jobReads.some((r) => r.cache === 'hit' && r.value !== 'COMPLETED') || documentReads.some((r) => r.cache === 'hit' && !r.value);
    }
    expect(exercised).toBe(true);
  }, 60_000);

  it('shows a new document in a cached list as soon as its upload returns', async () => {
    await read(system, DOCUMENTS);
    const cached = await read(system, DOCUMENTS);
    expect(cached.cache).toBe('hit');
    const { documentId } = await upload(system, 'listed at once');
    const after = await read(system, DOCUMENTS);
    expect(after.body.data.documents.edges.map((e: { node: { id: string } }) => e.node.id)).toContain(documentId);
  });

  it('keeps every tenant’s results apart', async () => {
    const { jobId } = await upload(system, 'tenant a only');
    // After jobCompleted no event touches the job again: a read stores it, the next one hits.
    await collect(system.ws(), 'subscription ($jobId: ID!) { jobCompleted(jobId: $jobId) { id } }', { jobId });
    await read(system, JOB, { id: jobId });
    const own = await read(system, JOB, { id: jobId });
    expect(own.cache).toBe('hit');
    expect(own.body.data.job.id).toBe(jobId);
    const other = await read(system, JOB, { id: jobId }, 'tenant-b');
    expect(other.cache).toBe('miss');
    expect(other.body.data.job).toBeNull();
  });

  it('asks the subgraphs once for identical queries that arrive together', async () => {
    const { jobId } = await upload(system, 'burst');
    await collect(system.ws(), 'subscription ($jobId: ID!) { jobCompleted(jobId: $jobId) { id } }', { jobId });
    const burst = await Promise.all(Array.from({ length: 10 }, () => read(system, 'query Burst($id: ID!) { burst: job(id: $id) { id status } }', { id: jobId })));
    expect(burst.filter((r) => r.cache === 'miss')).toHaveLength(1);
    for (const r of burst) expect(r.body).toEqual({ data: { burst: { id: jobId, status: 'COMPLETED' } } });
  });

  // Only a broker loses connections: the in-memory bus cannot.
  if (name.includes('RabbitMQ')) {
    // With the event log on (the default), the gateway follows the log, not a queue of its own:
    // after a lost connection it attaches again after the last event it saw, so it misses none and
    // keeps its cache. (With EVENT_LOG=off its queue is re-created and it drops the cache: the
    // event hub's onResubscribed.)
    it('keeps what it holds when its broker connection is lost, and goes on serving subscriptions', async () => {
      const { jobId } = await upload(system, 'before the outage');
      await collect(system.ws(), 'subscription ($jobId: ID!) { jobCompleted(jobId: $jobId) { id } }', { jobId });
      await read(system, JOB, { id: jobId });
      expect((await read(system, JOB, { id: jobId })).cache).toBe('hit');
      expect(await closeBrokerConnections(`${system.namespace}.gateway`)).toBeGreaterThanOrEqual(1);
      const during = await upload(system, 'during the outage');
      const completed = await collect(system.ws(), 'subscription ($jobId: ID!) { jobCompleted(jobId: $jobId) { id status } }', { jobId: during.jobId });
      expect(completed.map((m) => m.data?.jobCompleted?.status)).toEqual(['COMPLETED']);
      expect((await read(system, JOB, { id: jobId })).cache).toBe('hit');
    });
  }

  it('never answers stats older than a statsUpdated message, while serving repeats from the cache', async () => {
    const tenant = `stats-${name.length}-${Date.now()}`;
    const token = await system.token({ tenant });
    const STATS = '{ stats { documents analyzed } themes(first: 3) { name documentCount } }';
    expect((await read(system, STATS, {}, tenant)).body.data.stats.analyzed).toBe(0);
    expect((await read(system, STATS, {}, tenant)).cache).toBe('hit');
    const client = system.ws({ token });
    const messages: GraphQLResponse[] = [];
    const seen: Promise<void>[] = [];
    let arrived: (() => void) | undefined;
    const first = new Promise<void>((resolve) => (arrived = resolve));
    const stop = client.subscribe({ query: 'subscription { statsUpdated { analyzed } }' }, {
      next: (message) => {
        messages.push(message as GraphQLResponse);
        // A read that starts after the message must not be older than it.
        seen.push(read(system, STATS, {}, tenant).then(({ body }) => expect(body.data.stats.analyzed).toBeGreaterThanOrEqual((message as GraphQLResponse).data.statsUpdated.analyzed)));
        arrived?.();
      },
      error: () => {},
      complete: () => {},
    });
    // The subscription is registered once graphql-ws acknowledges it; give it a moment.
    await sleep(200);
    const uploaded = await system.query(UPLOAD, { input: { title: 'Counted', content: TEXT } }, { token });
    expect(uploaded.errors).toBeUndefined();
    await first;
    await Promise.all(seen);
    stop();
    expect(messages[0]!.data.statsUpdated.analyzed).toBe(1);
    const after = await read(system, STATS, {}, tenant);
    expect(after.body.data.stats).toEqual({ documents: 1, analyzed: 1 });
    expect(after.body.data.themes.length).toBeGreaterThan(0);
  });
});

// With EVENT_LOG=off the gateway hears events through an exclusive queue of its own, which dies
// with its connection: whatever was published until it is declared again never reaches it, so
// it drops everything it holds (the event hub's onResubscribed).
describe.skipIf(!available)('the event-invalidated cache, RabbitMQ with the event log off', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startProcessSystem({ gatewayEnv: { ...CACHE_ENV, EVENT_LOG: 'off' } });
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  });

  it('drops everything it holds when its event queue had to be re-created', async () => {
    const { jobId } = await upload(system, 'before the outage');
    await collect(system.ws(), 'subscription ($jobId: ID!) { jobCompleted(jobId: $jobId) { id } }', { jobId });
    await read(system, JOB, { id: jobId });
    expect((await read(system, JOB, { id: jobId })).cache).toBe('hit');
    expect(await closeBrokerConnections(`${system.namespace}.gateway`)).toBeGreaterThanOrEqual(1);
    await waitFor(async () => (await read(system, JOB, { id: jobId })).cache === 'miss', 30_000, 'the cache to be dropped after the reconnection');
  });
});
