/**
 * The analysis work table's order on PostgreSQL and RabbitMQ: fair share across tenants,
 * priorities with aging, the per-tenant cap across processes, where a job stands, and
 * cancellation with exactly one terminal event.
 */
import { OfflineAnalyzer, type AnalysisInput, type AnalysisResult, type Analyzer, type AnalyzeOptions } from '@tributary/ai';
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import { queryRows } from '@tributary/core/db';
import { servicesAvailable, waitFor } from '@tributary/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uploaded, World } from './fixtures.ts';

const available = await servicesAvailable();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An analyzer that takes `delayMs` per call (aborted by the signal) and records the order calls start in. */
class RecordingAnalyzer implements Analyzer {
  readonly provider = 'recording';
  readonly model = 'recording-1';
  readonly started: { title: string; tenantId: string; at: number }[] = [];
  readonly aborted: string[] = [];
  /** The most calls this process had in flight at once: never above its ANALYSIS_CONCURRENCY. */
  mostInFlight = 0;
  private inFlight = 0;
  private readonly offline = new OfflineAnalyzer();
  constructor(private readonly delayMs: number) {}

  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    this.started.push({ title: input.title ?? '', tenantId: options.tenantId ?? '', at: Date.now() });
    this.mostInFlight = Math.max(this.mostInFlight, ++this.inFlight);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, this.delayMs);
      options.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        this.aborted.push(input.title ?? '');
        reject(options.signal!.reason);
      });
    }).finally(() => this.inFlight--);
    return { ...(await this.offline.analyze(input)), provider: this.provider, model: this.model };
  }

  /** Position (0-based) at which a title's call started, or -1. */
  indexOf(title: string): number {
    return this.started.findIndex((s) => s.title === title);
  }
}

/**
 * Calls started after a document was enqueued and before its own call: how long it waited in
 * line, counted in starts (the service and the analyzer share this process's clock).
 */
async function startsBefore(analyzer: RecordingAnalyzer, doc: { documentId: string; title: string }): Promise<number> {
  const probe = await currentWorld.probe();
  const [row] = await queryRows<{ created_at: Date | string }>(probe.fork(), 'select created_at from analyses where document_id = ?', [doc.documentId]);
  const enqueuedAt = new Date(row!.created_at).getTime();
  const own = analyzer.started[analyzer.indexOf(doc.title)]!.at;
  return analyzer.started.filter((s) => s.at >= enqueuedAt && s.at < own).length;
}

/** The most calls of one tenant the test server was answering at once, from its request log. */
function maxInFlightOf(server: OpenAITestServer, tenant: string): number {
  const edges: [number, number][] = [];
  for (const r of server.requests) {
    if (r.endpoint !== 'chat' || !JSON.stringify(r.body).includes(`of ${tenant}:`)) continue;
    edges.push([r.receivedAt, 1], [r.answeredAt || Number.POSITIVE_INFINITY, -1]);
  }
  // Ends before starts at the same instant: a call answered as the next arrives is not overlap.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, step] of edges) most = Math.max(most, (now += step));
  return most;
}

let currentWorld: World;

const CANCEL = 'mutation($id: ID!) { cancelJob(id: $id) { id status } }';

describe.skipIf(!available)('the analysis work table', () => {
  let world: World;
  let server: OpenAITestServer | undefined;
  beforeEach(() => {
    world = currentWorld = new World();
  });
  afterEach(async () => {
    await world.cleanup();
    await server?.close();
    server = undefined;
  }, 60_000);

  it("starts another tenant's single document next, not behind a 200-document backlog", async () => {
    const analyzer = new RecordingAnalyzer(50);
    await world.service({ ANALYSIS_CONCURRENCY: '4' }, analyzer);
    await world.observe();
    const backlog = Array.from({ length: 200 }, (_, n) => uploaded(n, { tenant: 'bulk' }));
    await world.publish(backlog.map((d) => d.message));
    await waitFor(() => analyzer.started.length >= 20, 20_000, 'the backlog under way');
    const single = uploaded(1, { tenant: 'single' });
    await world.publish([single.message]);
    await waitFor(() => world.count('analysis.completed', single.documentId) === 1, 20_000, 'the single document analysed');
    // The next free slot takes it: at most one start per slot (4) between its enqueue and its own.
    expect(await startsBefore(analyzer, single)).toBeLessThanOrEqual(4);
    // The consumer claims into free slots too (in its own transaction): never more calls than slots.
    expect(analyzer.mostInFlight).toBeLessThanOrEqual(4);
    expect(world.count('analysis.completed', backlog[0]!.documentId)).toBe(1);
  }, 60_000);

  it('gives three tenants with equal backlogs equal turns: 5 each in every 15 consecutive starts (±2)', async () => {
    const analyzer = new RecordingAnalyzer(20);
    const running = await world.service({ ANALYSIS_CONCURRENCY: '3' }, analyzer);
    await world.observe();
    const tenants = ['t1', 't2', 't3'];
    const docs = tenants.flatMap((tenant) => Array.from({ length: 60 }, (_, n) => uploaded(n, { tenant })));
    // All enqueued before any starts, so the order is the table's alone, not how fast each burst arrived:
    // each tenant's documents published one burst after another, which arrival order alone would serve t1, t2, t3.
    const [scheduler] = running.workers;
    await scheduler!.stop();
    await world.publish(docs.map((d) => d.message));
    const probe = await world.probe();
    await waitFor(async () => Number((await queryRows<{ n: string }>(probe.fork(), 'select count(*) as n from analysis_queue'))[0]!.n) === docs.length, 20_000, 'all enqueued');
    await scheduler!.start();
    await waitFor(() => docs.every((d) => world.count('analysis.completed', d.documentId) === 1), 60_000, 'every document analysed');
    const order = analyzer.started.map((s) => s.tenantId);
    // Until the first tenant runs out (the last 15 starts may hold only the stragglers).
    for (let start = 0; start + 15 <= order.length - 15; start++) {
      const window = order.slice(start, start + 15);
      for (const tenant of tenants) {
        const share = window.filter((t) => t === tenant).length;
        expect(share, `starts ${start}..${start + 14}: ${window.join(' ')}`).toBeGreaterThanOrEqual(3);
        expect(share).toBeLessThanOrEqual(7);
      }
    }
  }, 90_000);

  it('starts a HIGH document ahead of its own tenant’s 100 LOW ones, and tells each waiting job its place', async () => {
    const analyzer = new RecordingAnalyzer(100);
    const running = await world.service({ ANALYSIS_CONCURRENCY: '2' }, analyzer);
    await world.observe();
    const low = Array.from({ length: 100 }, (_, n) => uploaded(n, { tenant: 'acme', priority: 'LOW' }));
    await world.publish(low.map((d) => d.message));
    await waitFor(() => analyzer.started.length >= 2, 10_000, 'the LOW backlog under way');
    // Every LOW document in the table first: the consumer's batches commit in any order.
    const probe = await world.probe();
    await waitFor(async () => Number((await queryRows<{ n: string }>(probe.fork(), `select count(*) as n from analyses where tenant_id = 'acme'`))[0]!.n) === low.length, 20_000, 'all LOW enqueued');
    const position = async (jobId: string) =>
      (await world.graphql<{ _entities: { queuePosition: number | null }[] }>(running.url, 'acme', 'query($r: [_Any!]!) { _entities(representations: $r) { ... on Job { queuePosition } } }', {
        r: [{ __typename: 'Job', id: jobId }],
      })).data!._entities[0]!.queuePosition;
    // The last in line (by the table's order: the consumer's batches commit in any order, so not
    // necessarily the last published) waits behind every other waiting document, counted just
    // before and just after its place is read (the two slots keep claiming meanwhile).
    const waiting = async () => Number((await queryRows<{ n: string }>(probe.fork(), 'select count(*) as n from analysis_queue where lease_token is null'))[0]!.n);
    const [last] = await queryRows<{ job_id: string }>(probe.fork(), 'select job_id from analysis_queue where lease_token is null order by urgency desc, tag desc, document_id desc limit 1');
    const before = await waiting();
    const lastPosition = await position(last!.job_id);
    const after = await waiting();
    expect(lastPosition).toBeLessThanOrEqual(before - 1);
    expect(lastPosition).toBeGreaterThanOrEqual(after - 1);
    expect(after).toBeGreaterThan(50);

    const high = uploaded(1000, { tenant: 'acme', priority: 'HIGH' });
    await world.publish([high.message]);
    await waitFor(() => world.count('analysis.completed', high.documentId) === 1, 10_000, 'the HIGH document analysed');
    expect(await startsBefore(analyzer, high)).toBeLessThanOrEqual(2);
    expect(analyzer.mostInFlight).toBeLessThanOrEqual(2);
    // A job that is running or done has no place in line.
    expect(await position(low[0]!.jobId)).toBeNull();
  }, 60_000);

  it('still starts a LOW document while HIGH ones keep arriving (aging: one step of 300 ms per level)', async () => {
    const analyzer = new RecordingAnalyzer(40);
    await world.service({ ANALYSIS_CONCURRENCY: '1', ANALYSIS_PRIORITY_STEP_MS: '300' }, analyzer);
    await world.observe();
    const low = uploaded(0, { tenant: 'acme', priority: 'LOW' });
    // Far more HIGH work than one slot can do: 3 HIGH documents every 40 ms, the first ahead of the LOW one.
    let stop = false;
    const highs: (ReturnType<typeof uploaded> & { publishedAt: number })[] = [];
    let lowPublishedAt = 0;
    const feed = (async () => {
      for (let n = 1; !stop; n++) {
        const batch = [0, 1, 2].map((k) => uploaded(n * 10 + k, { tenant: 'acme', priority: 'HIGH' }));
        await world.publish(batch.map((d) => d.message));
        highs.push(...batch.map((d) => ({ ...d, publishedAt: Date.now() })));
        if (n === 1) {
          lowPublishedAt = Date.now();
          await world.publish([low.message]);
        }
        await sleep(40);
      }
    })();
    try {
      await waitFor(() => world.count('analysis.completed', low.documentId) === 1, 10_000, 'the LOW document analysed while HIGH work waits');
    } finally {
      stop = true;
      await feed;
    }
    const lowIndex = analyzer.indexOf(low.title);
    const lowStartedAt = analyzer.started[lowIndex]!.at;
    // Overtaken only by HIGH work enqueued less than two steps (600 ms) after it (100 ms of slack for publish and enqueue)…
    for (const h of highs.filter((h) => { const i = analyzer.indexOf(h.title); return i !== -1 && i < lowIndex; })) {
      expect(h.publishedAt).toBeLessThan(lowPublishedAt + 700);
    }
    // …and started while HIGH work published before it was still waiting.
    expect(highs.filter((h) => h.publishedAt < lowStartedAt && (analyzer.indexOf(h.title) === -1 || analyzer.indexOf(h.title) > lowIndex)).length).toBeGreaterThan(5);
  }, 30_000);

  it('keeps one tenant within ANALYSIS_TENANT_CONCURRENCY=8 across two processes, while another tenant uses the rest', async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test', latencyMs: 300 });
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model', ANALYSIS_CONCURRENCY: '16', ANALYSIS_TENANT_CONCURRENCY: '8' };
    await Promise.all([world.process(env), world.process(env)]);
    await world.observe();
    const capped = Array.from({ length: 60 }, (_, n) => uploaded(n, { tenant: 'capped' }));
    const other = Array.from({ length: 30 }, (_, n) => uploaded(n, { tenant: 'other' }));
    await world.publish([...capped, ...other].map((d) => d.message));
    await waitFor(() => [...capped, ...other].every((d) => world.count('analysis.completed', d.documentId) === 1), 60_000, 'every document analysed');
    expect(maxInFlightOf(server, 'capped')).toBe(8);
    expect(maxInFlightOf(server, 'other')).toBe(8);
    expect(server.chatStats().maxInFlight).toBeGreaterThan(8);
  }, 90_000);

  it('cancels 500 QUEUED jobs with no model call for any of them, each with one analysis.cancelled', async () => {
    const analyzer = new RecordingAnalyzer(60_000);
    const running = await world.service({ ANALYSIS_CONCURRENCY: '1' }, analyzer);
    await world.observe();
    const blocker = uploaded(0);
    await world.publish([blocker.message]);
    await waitFor(() => analyzer.started.length === 1, 10_000, 'the one slot busy');
    const queued = Array.from({ length: 500 }, (_, n) => uploaded(n + 1));
    await world.publish(queued.map((d) => d.message));
    const probe = await world.probe();
    await waitFor(async () => Number((await queryRows<{ n: string }>(probe.fork(), 'select count(*) as n from analysis_queue'))[0]!.n) === 501, 20_000, 'all 500 enqueued');
    // Nothing moves while the slot is busy: each waiting job's place is the count of those before it.
    const position = async (jobId: string) =>
      (await world.graphql<{ _entities: { queuePosition: number | null }[] }>(running.url, 'tenant-a', 'query($r: [_Any!]!) { _entities(representations: $r) { ... on Job { queuePosition } } }', {
        r: [{ __typename: 'Job', id: jobId }],
      })).data!._entities[0]!.queuePosition;
    // In the table's order (the consumer's batches commit in any order, so not necessarily the publish order).
    const line = (await queryRows<{ job_id: string }>(probe.fork(), 'select job_id from analysis_queue where lease_token is null order by tag, enqueued_at, document_id')).map((r) => r.job_id);
    expect(line).toHaveLength(500);
    for (const n of [0, 1, 250, 499]) expect(await position(line[n]!)).toBe(n);
    const metrics = await (await fetch(new URL('/metrics', running.url))).text();
    expect(metrics).toMatch(/^tributary_analysis_documents\{state="waiting"\} 500$/m);
    expect(metrics).toMatch(/^tributary_analysis_documents\{state="running"\} 1$/m);
    expect(Number(/^tributary_analysis_oldest_waiting_age_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(await position(blocker.jobId)).toBeNull();
    for (let i = 0; i < queued.length; i += 50) {
      const answers = await Promise.all(queued.slice(i, i + 50).map((d) => world.graphql(running.url, 'tenant-a', CANCEL, { id: d.jobId })));
      for (const a of answers) expect(a).toEqual({ data: { cancelJob: { id: expect.any(String), status: 'CANCELLED' } } });
    }
    await waitFor(() => queued.every((d) => world.count('analysis.cancelled', d.documentId) === 1), 20_000, 'every cancel announced');
    // Free the slot: nothing else is left to start.
    await world.graphql(running.url, 'tenant-a', CANCEL, { id: blocker.jobId });
    await waitFor(() => world.count('analysis.cancelled', blocker.documentId) === 1, 10_000, 'the running one cancelled');
    await sleep(300);
    expect(analyzer.started).toHaveLength(1);
    expect(analyzer.aborted).toEqual([blocker.title]);
    for (const d of [blocker, ...queued]) expect(world.terminal(d.documentId)).toBe(1);
    const [left] = await queryRows<{ n: string }>(probe.fork(), `select count(*) as n from analyses where status <> 'CANCELLED'`);
    expect(Number(left!.n)).toBe(0);
    // Again: a no-op.
    expect(await world.graphql(running.url, 'tenant-a', CANCEL, { id: queued[0]!.jobId })).toEqual({ data: { cancelJob: { id: queued[0]!.jobId, status: 'CANCELLED' } } });
  }, 90_000);

  it('aborts a RUNNING call at the provider when its job is cancelled: the request is closed, one terminal event', async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test' });
    server.inject({ type: 'delay', ms: 20_000 }, { times: 1, endpoint: 'chat' });
    const child = await world.process({ OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model' });
    await world.observe();
    const doc = uploaded(1);
    await world.publish([doc.message]);
    await waitFor(() => server!.requests.some((r) => r.endpoint === 'chat'), 10_000, 'the call in flight');
    const answer = await world.graphql(child.url, 'tenant-a', CANCEL, { id: doc.jobId });
    expect(answer).toEqual({ data: { cancelJob: { id: doc.jobId, status: 'CANCELLED' } } });
    // The client left: the server logs status 0 once it notices (it would answer only after 20 s).
    await waitFor(() => server!.chatStats().inFlight === 0, 5_000, 'the request closed');
    const [chat] = server.requests.filter((r) => r.endpoint === 'chat');
    expect(chat!.status).toBe(0);
    await waitFor(() => world.count('analysis.cancelled', doc.documentId) === 1, 5_000, 'cancelled');
    await sleep(500);
    expect(world.terminal(doc.documentId)).toBe(1);
    expect(server.requests.filter((r) => r.endpoint === 'chat')).toHaveLength(1);
    // Finished jobs are refused with a code.
    const done = uploaded(2);
    await world.publish([done.message]);
    await waitFor(() => world.count('analysis.completed', done.documentId) === 1, 10_000, 'completed');
    const refused = await world.graphql(child.url, 'tenant-a', CANCEL, { id: done.jobId });
    expect(refused.errors?.[0]?.extensions?.code).toBe('JOB_ALREADY_FINISHED');
  }, 60_000);

  it('gives exactly one terminal state when cancels race completions, whichever wins', async () => {
    const analyzer = new RecordingAnalyzer(30);
    const running = await world.service({ ANALYSIS_CONCURRENCY: '8' }, analyzer);
    await world.observe();
    const docs = Array.from({ length: 80 }, (_, n) => uploaded(n));
    await world.publish(docs.map((d) => d.message));
    // Each cancel is sent 0, 15, 30 or 45 ms after its call started (a call takes 30 ms): around the completion.
    const answers = await Promise.all(
      docs.map(async (d, n) => {
        await waitFor(() => analyzer.indexOf(d.title) !== -1, 20_000, `${d.title} started`);
        await sleep((n % 4) * 15);
        return world.graphql(running.url, 'tenant-a', CANCEL, { id: d.jobId });
      }),
    );
    await waitFor(() => docs.every((d) => world.terminal(d.documentId) >= 1), 20_000, 'every job ended');
    await sleep(500);
    const probe = await world.probe();
    let cancelled = 0;
    for (const [n, d] of docs.entries()) {
      expect(world.terminal(d.documentId)).toBe(1);
      const [row] = await queryRows<{ status: string }>(probe.fork(), 'select status from analyses where document_id = ?', [d.documentId]);
      const answer = answers[n]!;
      if (world.count('analysis.cancelled', d.documentId) === 1) {
        cancelled++;
        expect(row!.status).toBe('CANCELLED');
        expect(answer.data).toEqual({ cancelJob: { id: d.jobId, status: 'CANCELLED' } });
      } else {
        expect(row!.status).toBe('COMPLETED');
        expect(answer.errors?.[0]?.extensions?.code).toBe('JOB_ALREADY_FINISHED');
      }
    }
    // Both sides won some races.
    expect(cancelled).toBeGreaterThan(0);
    expect(cancelled).toBeLessThan(docs.length);
  }, 60_000);

  it('cancels a job whose document has not reached analysis yet when it arrives, with no call', async () => {
    const analyzer = new RecordingAnalyzer(10);
    const running = await world.service({}, analyzer);
    await world.observe();
    const doc = uploaded(1);
    expect(await world.graphql(running.url, 'tenant-a', CANCEL, { id: doc.jobId })).toEqual({ data: { cancelJob: { id: doc.jobId, status: 'CANCELLED' } } });
    await world.publish([doc.message]);
    await waitFor(() => world.count('analysis.cancelled', doc.documentId) === 1, 10_000, 'cancelled on arrival');
    await sleep(300);
    expect(analyzer.started).toHaveLength(0);
    expect(world.terminal(doc.documentId)).toBe(1);
  }, 30_000);
});
