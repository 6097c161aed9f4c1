/**
 * The analysis stage's lease design on PostgreSQL and RabbitMQ: no database connection is held
 * during a model call, and each document gets exactly one model call and one
 * `analysis.completed`, whether its event is delivered twice at once, two analysis processes
 * share the work table, or a worker is SIGKILLed mid-call.
 */
import { OfflineAnalyzer, type AnalysisInput, type AnalysisResult, type Analyzer } from '@tributary/ai';
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import { queryRows } from '@tributary/core/db';
import { servicesAvailable, waitFor } from '@tributary/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { busyConnections, uploaded, World } from './fixtures.ts';

const available = await servicesAvailable();

/** An analyzer whose calls wait until released, counting calls per text. */
class GatedAnalyzer implements Analyzer {
  readonly provider = 'gated';
  readonly model = 'gated-1';
  readonly calls = new Map<string, number>();
  inFlight = 0;
  maxInFlight = 0;
  private release!: () => void;
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));
  private readonly offline = new OfflineAnalyzer();
  constructor(private readonly onCall: (analyzer: GatedAnalyzer) => Promise<void> = async () => {}) {}

  async analyze(input: AnalysisInput): Promise<AnalysisResult> {
    this.calls.set(input.title ?? '', (this.calls.get(input.title ?? '') ?? 0) + 1);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await this.onCall(this);
      await this.released;
      return { ...(await this.offline.analyze(input)), provider: this.provider, model: this.model };
    } finally {
      this.inFlight--;
    }
  }

  open(): void {
    this.release();
  }
}

describe.skipIf(!available)('the analysis lease on PostgreSQL and RabbitMQ', () => {
  let world: World;
  let server: OpenAITestServer | undefined;
  beforeEach(() => {
    world = new World();
  });
  afterEach(async () => {
    await world.cleanup();
    await server?.close();
    server = undefined;
  }, 60_000);

  it('holds no database connection during a model call: 16 slow calls in flight at once on a pool of 2', async () => {
    const analyzer = new GatedAnalyzer();
    await world.service({ DATABASE_POOL_SIZE: '2', ANALYSIS_CONCURRENCY: '16' }, analyzer);
    await world.observe();
    const probe = await world.probe();
    const docs = Array.from({ length: 16 }, (_, n) => uploaded(n));
    await world.publish(docs.map((d) => d.message));

    // Were a connection held per call, at most 2 calls could ever be in flight.
    await waitFor(() => analyzer.inFlight === 16, 30_000, `16 calls in flight (got ${analyzer.maxInFlight})`);
    // Once the claims have committed and their events are relayed, nothing is busy while 16 calls run.
    await waitFor(() => docs.every((d) => world.count('analysis.started', d.documentId) === 1), 10_000, 'every claim announced');
    await waitFor(async () => (await busyConnections(probe, world.dbName)) === 0, 5_000, 'no busy connection while the calls run');
    expect(analyzer.inFlight).toBe(16);

    analyzer.open();
    await waitFor(() => docs.every((d) => world.count('analysis.completed', d.documentId) === 1), 30_000, 'every document completed');
    for (const d of docs) expect(world.count('analysis.completed', d.documentId)).toBe(1);
    expect([...analyzer.calls.values()]).toEqual(Array(16).fill(1));
  });

  it('would catch a regression: the probe sees a connection held in a transaction', async () => {
    const analyzer = new GatedAnalyzer();
    const running = await world.service({ DATABASE_POOL_SIZE: '2' }, analyzer);
    const probe = await world.probe();
    await running.db.fork().transactional(async (tx) => {
      await tx.execute('select 1');
      expect(await busyConnections(probe, world.dbName)).toBe(1);
    });
    expect(await busyConnections(probe, world.dbName)).toBe(0);
  });

  it('makes one call and publishes one analysis.completed when the same event is delivered twice at once', async () => {
    const analyzer = new GatedAnalyzer(async () => new Promise((resolve) => setTimeout(resolve, 300)));
    const running = await world.service({ ANALYSIS_LEASE_MS: '1500' }, analyzer);
    await world.observe();
    const doc = uploaded(1);
    await world.publish([doc.message, doc.message]);
    await waitFor(() => analyzer.inFlight === 1, 10_000, 'the call');
    analyzer.open();
    await waitFor(() => world.count('analysis.completed', doc.documentId) === 1, 10_000, 'completed');
    // The second delivery met the inbox when it was enqueued: one work row, one call.
    const [consumer] = running.consumers;
    await waitFor(async () => (await consumer!.backlog()).depth === 0, 10_000, 'both deliveries settled');
    expect(analyzer.calls.get('Report 1')).toBe(1);
    expect(world.count('analysis.started', doc.documentId)).toBe(1);
    expect(world.count('analysis.completed', doc.documentId)).toBe(1);
  });

  it('makes one call and publishes one analysis.completed per document with two analysis processes on one queue', async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test' });
    server.inject({ type: 'delay', ms: 300 }, { times: Number.POSITIVE_INFINITY, endpoint: 'chat' });
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model', ANALYSIS_LEASE_MS: '2000' };
    await Promise.all([world.process(env), world.process(env)]);
    await world.observe();
    const docs = Array.from({ length: 20 }, (_, n) => uploaded(n));
    // Every event twice: the copies land on either process, often at once.
    await world.publish(docs.flatMap((d) => [d.message, d.message]));
    await waitFor(() => docs.every((d) => world.count('analysis.completed', d.documentId) === 1), 60_000, 'every document completed');
    // A copy that met a live lease waits it out (2 s), then finds the work done: give it the time
    // to make a second call if it wrongly would.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const probe = await world.probe();
    const chats = server.requests.filter((r) => r.endpoint === 'chat');
    for (const d of docs) {
      expect(world.count('analysis.started', d.documentId)).toBe(1);
      expect(world.count('analysis.completed', d.documentId)).toBe(1);
    }
    expect(chats).toHaveLength(20);
    const [stored] = await queryRows<{ n: number | string }>(probe.fork(), `select count(*) as n from analyses where status = 'COMPLETED' and attempts = 1`);
    expect(Number(stored!.n)).toBe(20);
  });

  it('takes over the work of a worker SIGKILLed mid-call only once its lease has expired, and completes the job once', async () => {
    server = await startOpenAITestServer({ apiKey: 'sk-test' });
    server.inject({ type: 'delay', ms: 20_000 }, { times: 1, endpoint: 'chat' });
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'test-model', ANALYSIS_LEASE_MS: '3000' };
    const first = await world.process(env);
    await world.observe();
    const doc = uploaded(1);
    await world.publish([doc.message]);
    const chats = () => server!.requests.filter((r) => r.endpoint === 'chat');
    await waitFor(() => chats().length === 1, 20_000, 'the first call');
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const probe = await world.probe();
    const [lease] = await queryRows<{ expires: string | Date; status: string }>(
      probe.fork(),
      'select q.available_at as expires, a.status from analysis_queue q join analyses a using (document_id) where document_id = ? and q.lease_token is not null',
      [doc.documentId],
    );
    expect(lease!.status).toBe('RUNNING');
    const expiresAt = new Date(lease!.expires).getTime();

    await world.process(env);
    await waitFor(() => world.count('analysis.completed', doc.documentId) === 1, 30_000, 'the job completed');
    expect(chats()).toHaveLength(2);
    // The second call waited for the lease to expire (the database's clock and ours are one machine's).
    expect(chats()[1]!.receivedAt).toBeGreaterThanOrEqual(expiresAt - 50);
    expect(world.count('analysis.started', doc.documentId)).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(world.count('analysis.completed', doc.documentId)).toBe(1);
    const [row] = await queryRows<{ status: string; attempts: number }>(probe.fork(), 'select status, attempts from analyses where document_id = ?', [doc.documentId]);
    expect(row).toEqual({ status: 'COMPLETED', attempts: 2 });
  });
});
