import { createLogger } from '@tributary/core';
import { EventConsumer, type BatchEventHandler } from '@tributary/core/events';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { namespacedDatabaseEnv, servicesAvailable, TEST_AMQP_URL, TEST_DATABASE_URL, waitFor } from '@tributary/core/testing';
import { rebuildViews, type RebuildProgress } from '@tributary/core/views';
import type { RunningService, ServiceDefinition } from '@tributary/core/service';
import { loadSubgraphServices } from '@tributary/schema/subgraphs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const READ = '{ stats { documents analyzed failed } themes(first: 100) { name documentCount averageScore } }';
const DOCUMENTS = `query($after: String) { documents(first: 100, after: $after) {
  edges { node { id job { status } analysis { themes { name score } } } } pageInfo { hasNextPage endCursor } } }`;
const TEXTS = [
  'Solar panels and wind turbines cut the energy bill of the factory while the grid operator raised its prices.',
  'Customer support tickets about onboarding fell sharply after the new tutorial videos were published.',
  'Quarterly revenue grew in every region, led by subscriptions in Europe and hardware sales in Asia.',
  'The hospital reduced waiting times in the emergency department by hiring nurses and opening a new wing.',
  'Heavy rain flooded the railway tunnel, delaying commuters and forcing the city to reroute buses downtown.',
];
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BEFORE = 120;
const RATE_PER_SECOND = 20;
const TYPES = ['analysis.completed', 'analysis.failed', 'analysis.cancelled'] as const;

const available = await servicesAvailable();
const insightsService: ServiceDefinition = (await loadSubgraphServices()).find((d) => d.name === 'insights')!;
type ParsedEvent = Parameters<BatchEventHandler>[0][number];
/** insights' own fold, as its definition builds it (its consumers use none of the service's dependencies). */
const aggregate: BatchEventHandler = insightsService.consumers!({} as never).find((c) => c.name === 'aggregates')!.batchHandler!;
const logger = createLogger({ service: 'test', level: 'silent' });

interface Theme {
  name: string;
  score: number;
}
interface Doc {
  id: string;
  job: { status: string } | null;
  analysis: { themes: Theme[] } | null;
}

/**
 * The changed fold: a theme counts for a document only when scored at least `threshold` (the
 * old fold counted every theme). Everything else is insights' own fold.
 */
function thresholdFold(threshold: number): BatchEventHandler {
  return (events, context) =>
    aggregate(
      events.map((event) => (event.type === 'analysis.completed' ? ({ ...event, data: { ...event.data, themes: (event.data as { themes: Theme[] }).themes.filter((t) => t.score >= threshold) } } as ParsedEvent) : event)),
      context,
    );
}

/** stats and themes computed from scratch over every document, with the changed fold's rule. */
function fromScratch(docs: Doc[], threshold: number) {
  const themes = new Map<string, { count: number; sum: number }>();
  for (const doc of docs) {
    const best = new Map<string, number>();
    for (const t of doc.analysis?.themes ?? []) {
      const name = t.name.trim().toLowerCase();
      if (name && t.score >= threshold) best.set(name, Math.max(best.get(name) ?? 0, t.score));
    }
    for (const [name, score] of best) {
      const theme = themes.get(name) ?? { count: 0, sum: 0 };
      theme.count++;
      theme.sum += score;
      themes.set(name, theme);
    }
  }
  const analyzed = docs.filter((d) => d.analysis !== null).length;
  const failed = docs.filter((d) => d.job?.status === 'FAILED').length;
  return {
    stats: { documents: analyzed + failed, analyzed, failed },
    themes: [...themes]
      .map(([name, t]) => ({ name, documentCount: t.count, averageScore: Math.round((t.sum / t.count) * 1000) / 1000 }))
      .sort((a, b) => b.documentCount - a.documentCount || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .slice(0, 100),
  };
}

describe.skipIf(!available)('pnpm views:rebuild insights, as deployed on PostgreSQL and RabbitMQ (the log a RabbitMQ stream)', () => {
  let system: TestSystem & { services: RunningService[] };
  let deployed: EventConsumer | undefined;
  beforeAll(async () => {
    system = await startEmbeddedSystem({ realServices: true, env: { UPLOAD_RATE_LIMIT_PER_MINUTE: '100000', QUERY_MAX_COST: '100000' } });
  }, 120_000);
  afterAll(async () => {
    await deployed?.stop();
    await system?.stop();
  }, 60_000);

  let uploaded = 0;
  const upload = async () => {
    const n = uploaded++;
    const response = await system.query(UPLOAD, { input: { title: `Rebuild ${n}`, content: `${TEXTS[n % TEXTS.length]} Item ${n}.` } });
    expect(response.errors).toBeUndefined();
  };
  const documents = async (): Promise<Doc[]> => {
    const docs: Doc[] = [];
    let after: string | null = null;
    for (;;) {
      const page: { data?: { documents: { edges: { node: Doc }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } }; errors?: unknown } = await system.query<{ documents: { edges: { node: Doc }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } }>(DOCUMENTS, { after });
      expect(page.errors).toBeUndefined();
      docs.push(...page.data!.documents.edges.map((e) => e.node));
      if (!page.data!.documents.pageInfo.hasNextPage) return docs;
      after = page.data!.documents.pageInfo.endCursor;
    }
  };
  const settled = async () => {
    await waitFor(
      async () => {
        const docs = await documents();
        return docs.length === uploaded && docs.every((d) => d.job?.status === 'COMPLETED' || d.job?.status === 'FAILED');
      },
      180_000,
      'every upload analysed',
    );
  };

  it('rebuilds stats and themes with a changed fold while 20 uploads/s go on; reads never fail and the result equals a computation from scratch', async () => {
    for (let i = 0; i < BEFORE; i += 20) await Promise.all(Array.from({ length: 20 }, () => upload()));
    await settled();
    const insights = system.services.find((s) => s.name === 'insights')!;
    expect(insights.transport.log).toBeDefined();
    // The threshold is the median score seen: the changed fold drops about half the themes.
    const scores = (await documents()).flatMap((d) => d.analysis?.themes.map((t) => t.score) ?? []).sort((a, b) => a - b);
    const threshold = scores[Math.floor(scores.length / 2)]!;
    await waitFor(async () => (await system.query(READ)).data?.stats.documents === BEFORE, 30_000, 'the old fold caught up');
    const before = await system.query(READ);

    // Deploy the changed fold: the live consumer folds new events with it; the views still hold the old one's result.
    const live = insights.consumers[0]!;
    await live.stop();
    const fold = thresholdFold(threshold);
    deployed = new EventConsumer({ service: 'insights', name: 'aggregates', types: [...TYPES], db: insights.db, transport: insights.transport, logger, batchHandler: fold });
    await deployed.start();

    let running = true;
    const reads = { ok: 0, errors: [] as unknown[] };
    const reader = (async () => {
      while (running) {
        try {
          const r = await system.query(READ);
          if (r.errors) reads.errors.push(r.errors);
          else reads.ok++;
        } catch (error) {
          reads.errors.push(error);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const uploader = (async () => {
      while (running) {
        const tick = Date.now();
        await upload();
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 / RATE_PER_SECOND - (Date.now() - tick))));
      }
    })();
    const phases: RebuildProgress[] = [];
    let result;
    const during = { reads: 0, uploads: 0 };
    try {
      // Let the load run a moment first, so the rebuild starts with events in flight.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      during.reads = reads.ok;
      during.uploads = uploaded;
      result = await rebuildViews({
        service: 'insights',
        views: insightsService.views!,
        consumers: [{ name: 'aggregates', types: [...TYPES], batchHandler: fold }],
        db: insights.db,
        log: insights.transport.log,
        logger,
        batchSize: 50,
        onProgress: (p) => phases.push(p),
      });
      during.reads = reads.ok - during.reads;
      during.uploads = uploaded - during.uploads;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    } finally {
      running = false;
      await Promise.all([uploader, reader]);
    }
    expect(result.partial).toBe(false);
    expect(result.applied).toBeGreaterThanOrEqual(BEFORE);
    expect(phases.some((p) => p.phase === 'swap')).toBe(true);
    expect(reads.errors).toEqual([]);
    expect(reads.ok).toBeGreaterThan(10);
    // Reads and uploads went on while the rebuild ran, not only around it.
    expect(during.reads).toBeGreaterThan(0);
    expect(during.uploads).toBeGreaterThan(0);
    expect(uploaded).toBeGreaterThan(BEFORE);

    await settled();
    const want = fromScratch(await documents(), threshold);
    await waitFor(async () => (await system.query(READ)).data?.stats.documents === want.stats.documents, 60_000, 'the views caught up with every upload');
    const after = await system.query(READ);
    expect(after.errors).toBeUndefined();
    expect(after.data.stats).toEqual(want.stats);
    expect(after.data.themes.map((t: { name: string; documentCount: number }) => [t.name, t.documentCount])).toEqual(want.themes.map((t) => [t.name, t.documentCount]));
    for (const [i, theme] of want.themes.entries()) expect(after.data.themes[i].averageScore).toBeCloseTo(theme.averageScore, 2);
    // The old fold's themes are gone: the changed fold counts fewer of them.
    expect(after.data.themes).not.toEqual(before.data.themes);
    expect(await system.count('insights', `select count(*) as n from pg_namespace where nspname like 'tributary_rebuild%'`)).toBe(0);
  }, 300_000);

  it('pnpm views:rebuild insights, as a child process, rebuilds with the fold of the code it runs, printing its progress on stderr', async () => {
    await settled();
    const env = {
      ...process.env,
      ...namespacedDatabaseEnv(TEST_DATABASE_URL, system.namespace!, ['insights']),
      AMQP_URL: TEST_AMQP_URL,
      TRIBUTARY_NAMESPACE: system.namespace!,
      INTERNAL_SIGNING_SECRET: system.secrets.internal,
      LOG_LEVEL: 'silent',
    };
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/core/src/cli/views-rebuild.ts', 'insights'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect({ code, stdout }).toMatchObject({ code: 0, stdout: expect.stringContaining('insight_documents, theme_stats, tenant_stats rebuilt from') });
    expect(stderr).toMatch(/views:rebuild replay.* done in/);
    // The code's own fold counts every theme: the threshold is gone from the views.
    const want = fromScratch(await documents(), 0);
    const after = await system.query(READ);
    expect(after.data.stats).toEqual(want.stats);
    expect(after.data.themes.map((t: { name: string; documentCount: number }) => [t.name, t.documentCount])).toEqual(want.themes.map((t) => [t.name, t.documentCount]));
  }, 120_000);
});
