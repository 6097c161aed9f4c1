import type { ParsedEvent } from '@tributary/contracts';
import { createLogger } from '@tributary/core';
import { queryRows, type Database, type DatabaseTarget } from '@tributary/core/db';
import { EventConsumer, InMemoryTransport, MemoryEventLog, type BatchEventHandler } from '@tributary/core/events';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable, testNamespace, waitFor } from '@tributary/core/testing';
import { rebuildViews, ViewsErrorCode, type RebuildOptions, type ViewConsumer } from '@tributary/core/views';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InsightDocument, migrations, TenantStat, ThemeStat } from '../src/entities.ts';
import { aggregate, insightsService } from '../src/service.ts';

const available = await servicesAvailable();
const logger = createLogger({ service: 'test', level: 'silent' });
const TYPES = ['analysis.completed', 'analysis.failed', 'analysis.cancelled'] as const;
const THEMES = ['solar', 'wind', 'tides', 'grid'];

/** One document's outcome, as analysis publishes it: completed with themes, or failed. */
function outcome(tenant: string, i: number) {
  const id = randomUUID();
  const documentId = randomUUID();
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
  const failed = i % 5 === 0;
  const themes = [THEMES[i % 4]!, THEMES[(i + 1) % 4]!].map((name) => ({ name, score: 0.5 }));
  const type = failed ? 'analysis.failed' : 'analysis.completed';
  const data = failed
    ? { documentId, jobId: randomUUID(), error: { code: 'X', message: 'm' }, attempts: 3, failedAt: at }
    : { documentId, jobId: randomUUID(), summary: 's', themes, keywords: [], sentiment: { label: 'NEUTRAL', score: 0 }, provider: 'offline', model: 'm', tokens: { prompt: 1, completion: 1 }, attempts: 1, completedAt: at };
  const body = JSON.stringify({ id, type, source: 'analysis', specversion: '1.0', time: at, dataschema: `${type}/v1`, subject: documentId, tenantid: tenant, data });
  return { message: { routingKey: type, messageId: id, body: Buffer.from(body) }, tenant, failed, themes: themes.map((t) => t.name) };
}
type Outcome = ReturnType<typeof outcome>;

/** The views computed from scratch over every outcome. */
function expected(outcomes: Outcome[]) {
  const tenants = new Map<string, { analyzed: number; failed: number; cancelled: number }>();
  const themes = new Map<string, number>();
  for (const o of outcomes) {
    const t = tenants.get(o.tenant) ?? { analyzed: 0, failed: 0, cancelled: 0 };
    if (o.failed) t.failed++;
    else {
      t.analyzed++;
      for (const name of new Set(o.themes)) themes.set(`${o.tenant}/${name}`, (themes.get(`${o.tenant}/${name}`) ?? 0) + 1);
    }
    tenants.set(o.tenant, t);
  }
  return { tenants: Object.fromEntries([...tenants].sort()), themes: Object.fromEntries([...themes].sort()) };
}

/** A broken fold, as deployed before the fix: it drops failures. */
const dropsFailures: BatchEventHandler = (events, context) => aggregate(events.filter((e) => e.type !== 'analysis.failed'), context);

const targets: [string, DatabaseTarget][] = [
  ['PostgreSQL', randomDatabaseTarget()],
  ['PGlite (embedded mode)', { kind: 'pglite', dataDir: 'memory://' }],
];

describe.skipIf(!available).each(targets)('rebuildViews on %s (insights, log in memory)', (_name, target) => {
  let db: Database;
  beforeAll(async () => {
    db = await openTestDatabase(target, { entities: [InsightDocument, ThemeStat, TenantStat], migrations, logger, poolSize: 6 });
  });
  afterAll(async () => {
    await db?.close();
    await dropTestDatabase(target);
  });

  let running: { stop(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const r of running.reverse()) await r.stop();
    running = [];
    await db.fork().execute('truncate insight_documents, theme_stats, tenant_stats, tributary_inbox, tributary_inbox_watermark, tributary_outbox');
  });

  /** A bus with a log, and the live consumer folding with `batchHandler`. */
  async function live(batchHandler: BatchEventHandler, log = new MemoryEventLog()) {
    const transport = new InMemoryTransport(testNamespace('rebuild'), log);
    await transport.start();
    let applied = 0;
    const consumer = new EventConsumer({ service: 'insights', name: 'aggregates', types: [...TYPES], db, transport, logger, batchHandler, onApplied: (n) => (applied += n) });
    await consumer.start();
    running.push({ stop: () => transport.close() }, consumer);
    return { transport, log, consumer, applied: () => applied };
  }

  const views = async () => {
    const tenants = await queryRows<{ tenant_id: string; analyzed: number; failed: number; cancelled: number }>(db.fork(), 'select * from tenant_stats order by tenant_id');
    const themes = await queryRows<{ tenant_id: string; name: string; document_count: number }>(db.fork(), 'select tenant_id, name, document_count from theme_stats order by tenant_id, name');
    return {
      tenants: Object.fromEntries(tenants.map((t) => [t.tenant_id, { analyzed: t.analyzed, failed: t.failed, cancelled: t.cancelled }])),
      themes: Object.fromEntries(themes.map((t) => [`${t.tenant_id}/${t.name}`, t.document_count])),
    };
  };
  const options = (log: MemoryEventLog | undefined, consumers: ViewConsumer[] = [{ name: 'aggregates', types: [...TYPES], batchHandler: aggregate }]): RebuildOptions => ({
    service: 'insights',
    views: insightsService.views!,
    consumers,
    db,
    log,
    logger,
    batchSize: 50,
  });
  const schemas = async () => (await queryRows<{ nspname: string }>(db.fork(), `select nspname from pg_namespace where nspname like 'tributary_rebuild%'`)).map((r) => r.nspname);
  const indexes = async () => (await queryRows<{ indexname: string }>(db.fork(), `select indexname from pg_indexes where schemaname = 'public' and tablename = any(?) order by 1`, [[...insightsService.views!.tables]])).map((r) => r.indexname);

  it('replaces views folded by a broken fold with the fixed fold over all history, while events keep coming', async () => {
    const indexesBefore = await indexes();
    const tenants = ['t-a', 't-b', 't-c'];
    const outcomes: Outcome[] = [];
    const publish = async (n: number) => {
      const batch = Array.from({ length: n }, (_, i) => outcome(tenants[(outcomes.length + i) % 3]!, outcomes.length + i));
      outcomes.push(...batch);
      await broken.transport.publish(batch.map((b) => b.message));
    };
    const broken = await live(dropsFailures);
    await publish(400);
    await waitFor(() => broken.applied() >= 400, 20_000, 'the broken fold took every outcome');
    expect((await views()).tenants['t-a']!.failed).toBe(0);
    // The fix is deployed: the live consumer folds correctly from now on; the past is still wrong.
    await broken.consumer.stop();
    const fixed = new EventConsumer({ service: 'insights', name: 'aggregates', types: [...TYPES], db, transport: broken.transport, logger, batchHandler: aggregate });
    await fixed.start();
    running.push(fixed);

    let publishing = true;
    const more = (async () => {
      while (publishing) {
        await publish(10);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const progress: number[] = [];
    let result;
    try {
      result = await rebuildViews({ ...options(broken.log), onProgress: (p) => progress.push(p.done) });
    } finally {
      publishing = false;
      await more;
    }
    await publish(20);

    const want = expected(outcomes);
    await waitFor(async () => JSON.stringify(await views()) === JSON.stringify(want), 20_000, 'the views equal a computation from scratch');
    expect(await views()).toEqual(want);
    expect(result.partial).toBe(false);
    expect(result.applied).toBeGreaterThanOrEqual(400);
    // insights.updated is an announcement: dropped during the rebuild, none in the outbox from it.
    expect(result.announcementsDropped).toBeGreaterThan(0);
    expect(progress.length).toBeGreaterThan(0);
    expect(await schemas()).toEqual([]);
    expect(await indexes()).toEqual(indexesBefore);
    // No event was recorded twice, and every one once.
    const [inbox] = await queryRows<{ n: number; distinct: number }>(db.fork(), `select count(*)::int as n, count(distinct event_id)::int as distinct from tributary_inbox where consumer = 'insights.aggregates'`);
    expect(inbox).toEqual({ n: outcomes.length, distinct: outcomes.length });
  });

  it('folds written with the EntityManager (find, create, flush) read and write the shadow tables too', async () => {
    const system = await live(aggregate);
    const outcomes = Array.from({ length: 60 }, (_, i) => outcome(`t-em-${i % 2}`, i));
    await system.transport.publish(outcomes.map((o) => o.message));
    await waitFor(() => system.applied() >= 60, 20_000, 'the live fold applied every outcome');
    // Counts every outcome as analyzed, through MikroORM: the table names it generates are unqualified.
    const byEntity: BatchEventHandler = async (events, { em }) => {
      for (const event of events) {
        const row = (await em.findOne(TenantStat, { tenantId: event.tenantid })) ?? em.create(TenantStat, { tenantId: event.tenantid, analyzed: 0, failed: 0, cancelled: 0 });
        row.analyzed++;
        await em.flush();
      }
    };
    await rebuildViews(options(system.log, [{ name: 'aggregates', types: [...TYPES], batchHandler: byEntity }]));
    expect((await views()).tenants).toEqual({ 't-em-0': { analyzed: 30, failed: 0, cancelled: 0 }, 't-em-1': { analyzed: 30, failed: 0, cancelled: 0 } });
    expect((await views()).themes).toEqual({});
  });

  it("copies into the live inbox the rows of events still to come to the live consumer, only from its watermark on (older ones the prune deletes anyway)", async () => {
    const system = await live(aggregate);
    // In the log, not yet delivered to the live consumer (as a backlog in its queue would be).
    const pending = Array.from({ length: 20 }, (_, i) => outcome('t-w', i));
    system.log.append(pending.map((o) => o.message));
    await db.fork().execute(`insert into tributary_inbox_watermark (consumer, pruned_before) values ('insights.aggregates', '2026-01-01T00:00:10Z')`);
    await rebuildViews(options(system.log));
    expect(await views()).toEqual(expected(pending));
    const copied = await queryRows<{ event_id: string }>(db.fork(), `select event_id from tributary_inbox where consumer = 'insights.aggregates' order by event_time`);
    expect(copied.map((r) => r.event_id)).toEqual(pending.slice(10).map((o) => o.message.messageId));
  });

  it('gives a serial column of a view a sequence of its own, which moves with its table and outlives the old one', async () => {
    await db.fork().execute('create table if not exists fold_rows (id bigserial primary key, event_id uuid not null unique, tenant_id text not null)');
    const system = await live(aggregate);
    const outcomes = Array.from({ length: 25 }, (_, i) => outcome('t-s', i));
    await system.transport.publish(outcomes.map((o) => o.message));
    await waitFor(() => system.applied() >= 25, 20_000, 'the live fold took every outcome');
    const rows: BatchEventHandler = async (events, context) => {
      await aggregate(events, context);
      for (const event of events) await context.em.getConnection().execute('insert into fold_rows (event_id, tenant_id) values (?, ?)', [event.id, event.tenantid], 'run', context.em.getTransactionContext());
    };
    const views = { ...insightsService.views!, tables: [...insightsService.views!.tables, 'fold_rows'] };
    await rebuildViews({ ...options(system.log, [{ name: 'aggregates', types: [...TYPES], batchHandler: rows }]), views });
    const [count] = await queryRows<{ n: number; max: string }>(db.fork(), 'select count(*)::int as n, max(id)::text as max from fold_rows');
    expect(count).toEqual({ n: 25, max: '25' });
    // The old table and its sequence are gone; the new default draws from the new table's own.
    await db.fork().execute(`insert into fold_rows (event_id, tenant_id) values ('${randomUUID()}', 't-s')`);
    const [next] = await queryRows<{ id: string }>(db.fork(), 'select max(id)::text as id from fold_rows');
    expect(next!.id).toBe('26');
    const [owned] = await queryRows<{ seq: string }>(db.fork(), `select pg_get_serial_sequence('public.fold_rows', 'id') as seq`);
    expect(owned!.seq).toBe('public.fold_rows_id_seq');
    await db.fork().execute('drop table fold_rows');
  });

  it('refuses with VIEWS_LOG_OFF when the log is off, and touches nothing', async () => {
    await expect(rebuildViews(options(undefined))).rejects.toMatchObject({ code: ViewsErrorCode.VIEWS_LOG_OFF });
    expect(await schemas()).toEqual([]);
  });

  it('refuses with VIEWS_PARTIAL_HISTORY when the log dropped its oldest events, and rebuilds what it keeps with acceptPartial', async () => {
    const system = await live(aggregate, new MemoryEventLog({ maxEntries: 50 }));
    const outcomes = Array.from({ length: 80 }, (_, i) => outcome('t-p', i));
    await system.transport.publish(outcomes.map((o) => o.message));
    await waitFor(() => system.applied() >= 80, 20_000, 'the live fold applied every outcome');
    const before = await views();
    await expect(rebuildViews(options(system.log))).rejects.toMatchObject({ code: ViewsErrorCode.VIEWS_PARTIAL_HISTORY });
    expect(await views()).toEqual(before);
    const result = await rebuildViews({ ...options(system.log), acceptPartial: true });
    expect(result.partial).toBe(true);
    expect(await views()).toEqual(expected(outcomes.slice(30)));
  });

  it('fails with VIEWS_PUBLISH_REFUSED when the fold publishes more than its announcements, leaving the live views as they were', async () => {
    const system = await live(aggregate);
    const outcomes = Array.from({ length: 30 }, (_, i) => outcome('t-x', i));
    await system.transport.publish(outcomes.map((o) => o.message));
    await waitFor(() => system.applied() >= 30, 20_000, 'the live fold applied every outcome');
    const before = await views();
    const publishing: BatchEventHandler = async (events: ParsedEvent[], context) => {
      await aggregate(events, context);
      await context.publish([{ type: 'document.uploaded', subject: 'x', tenantId: 't-x', data: {} as never }]);
    };
    await expect(rebuildViews(options(system.log, [{ name: 'aggregates', types: [...TYPES], batchHandler: publishing }]))).rejects.toMatchObject({
      code: ViewsErrorCode.VIEWS_PUBLISH_REFUSED,
    });
    expect(await views()).toEqual(before);
    expect(await schemas()).toEqual([]);
  });

  it('leaves the live views untouched when interrupted, and a rerun completes', async () => {
    const system = await live(dropsFailures);
    const outcomes = Array.from({ length: 300 }, (_, i) => outcome('t-i', i));
    await system.transport.publish(outcomes.map((o) => o.message));
    await waitFor(() => system.applied() >= 300, 20_000, 'the live fold took every outcome');
    const before = await views();
    const controller = new AbortController();
    const interrupted = rebuildViews({ ...options(system.log), signal: controller.signal, onProgress: (p) => p.done >= 100 && controller.abort() });
    await expect(interrupted).rejects.toMatchObject({ code: ViewsErrorCode.VIEWS_REBUILD_ABORTED });
    expect(await views()).toEqual(before);
    expect(await schemas()).toEqual([]);
    const result = await rebuildViews(options(system.log));
    expect(await views()).toEqual(expected(outcomes));
    // The rebuilt state is announced once, with the swap: the tenant's totals as the new views hold them.
    expect(result.announced).toBe(1);
    const [last] = await queryRows<{ payload: string | { data: unknown } }>(db.fork(), `select payload from tributary_outbox where type = 'insights.updated' and tenant_id = 't-i' order by id desc limit 1`);
    const payload = typeof last!.payload === 'string' ? (JSON.parse(last!.payload) as { data: unknown }) : last!.payload;
    expect(payload.data).toMatchObject({ ...expected(outcomes).tenants['t-i'], documents: 300 });
  });
});
