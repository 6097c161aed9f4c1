/**
 * The work table as `pnpm dev` runs it: PGlite (one session for everything) and the in-memory
 * bus. The order, priorities and cancellation are the same SQL as on PostgreSQL; this shows they
 * hold on one connection, with wake-ups delivered inside other queries (see scheduler.ts).
 */
import { OfflineAnalyzer, type AnalysisInput, type AnalysisResult, type Analyzer, type AnalyzeOptions } from '@tributary/ai';
import { InMemoryTransport, type Delivery } from '@tributary/core/events';
import { startService, type RunningService } from '@tributary/core/service';
import { waitFor } from '@tributary/core/testing';
import { signIdentity } from '@tributary/core';
import { queryRows } from '@tributary/core/db';
import { afterEach, describe, expect, it } from 'vitest';
import { createAnalysisService } from '../src/service.ts';
import { silent, uploaded } from './fixtures.ts';

const SECRET = 'embedded-test-secret-embedded-test-secret';

/** Records the order calls start in; each call takes `delayMs` unless aborted. */
class Recording implements Analyzer {
  readonly provider = 'recording';
  readonly model = 'recording-1';
  readonly started: string[] = [];
  readonly startedAt: number[] = [];
  private readonly offline = new OfflineAnalyzer();
  constructor(private readonly delayMs: number) {}
  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    this.started.push(input.title ?? '');
    this.startedAt.push(Date.now());
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, this.delayMs);
      options.signal?.addEventListener('abort', () => (clearTimeout(timer), reject(options.signal!.reason)));
    });
    return { ...(await this.offline.analyze(input)), provider: this.provider, model: this.model };
  }
}

describe('the analysis work table in pnpm dev mode (PGlite, in-memory bus)', () => {
  let running: RunningService | undefined;
  let bus: InMemoryTransport | undefined;
  afterEach(async () => {
    await running?.stop();
    await bus?.close();
    running = undefined;
  });

  it('serves tenants in turn and priorities within one, cancels a queued job with no call', async () => {
    bus = new InMemoryTransport('embedded-scheduling');
    await bus.start();
    const analyzer = new Recording(20);
    running = await startService(createAnalysisService({ analyzer }), {
      env: { TRIBUTARY_DATA_DIR: 'memory://', INTERNAL_SIGNING_SECRET: SECRET, LOG_LEVEL: 'silent', ANALYSIS_CONCURRENCY: '1', TRIBUTARY_NAMESPACE: 'embedded-scheduling' },
      transport: bus,
      port: 0,
      logger: silent,
    });
    const events: Delivery[] = [];
    await bus.consume({ queue: 'observer', bindings: ['analysis.*'], prefetch: 1000, retryDelaysMs: [] }, (d) => {
      events.push(d);
      void d.ack();
    });
    const terminal = (documentId: string) =>
      events.filter((d) => ['analysis.completed', 'analysis.cancelled', 'analysis.failed'].includes(d.routingKey) && (JSON.parse(d.body.toString()) as { data: { documentId: string } }).data.documentId === documentId).length;

    const bulk = Array.from({ length: 30 }, (_, n) => uploaded(n, { tenant: 'bulk', priority: 'LOW' }));
    await bus.publish(bulk.map((d) => d.message));
    await waitFor(() => analyzer.started.length >= 1, 10_000, 'the bulk under way');
    const single = uploaded(0, { tenant: 'single' });
    const high = uploaded(99, { tenant: 'bulk', priority: 'HIGH' });
    const doomed = bulk.at(-1)!;
    await bus.publish([single.message, high.message]);
    const cancel = await fetch(running.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(SECRET, { tenantId: 'bulk', userId: 'u' }) },
      body: JSON.stringify({ query: 'mutation($id: ID!) { cancelJob(id: $id) { id status } }', variables: { id: doomed.jobId } }),
    });
    expect(await cancel.json()).toEqual({ data: { cancelJob: { id: doomed.jobId, status: 'CANCELLED' } } });

    await waitFor(() => [...bulk, single, high].every((d) => terminal(d.documentId) === 1), 20_000, 'every job ended');
    const at = (title: string) => analyzer.started.indexOf(title);
    // The single tenant's document and the HIGH one each within a few starts of being enqueued, ahead of 25 LOW ones.
    const startsBefore = async (doc: { documentId: string; title: string }) => {
      const [row] = await queryRows<{ created_at: Date | string }>(running!.db.fork(), 'select created_at from analyses where document_id = ?', [doc.documentId]);
      const enqueuedAt = new Date(row!.created_at).getTime();
      return analyzer.startedAt.filter((t, i) => t >= enqueuedAt && i < at(doc.title)).length;
    };
    expect(await startsBefore(single)).toBeLessThanOrEqual(2);
    expect(await startsBefore(high)).toBeLessThanOrEqual(2);
    expect(at(doomed.title)).toBe(-1);
    expect(analyzer.started).toHaveLength(bulk.length - 1 + 2);
  }, 60_000);
});
