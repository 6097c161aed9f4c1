import type { Envelope, InsightsUpdated, ParsedEvent } from '@tributary/contracts';
import { parse } from '@tributary/contracts';
import { createLogger } from '@tributary/core';
import type { Database } from '@tributary/core/db';
import { publish, type HandlerContext, type NewEvent } from '@tributary/core/events';
import { signIdentity } from '@tributary/core/identity';
import { startService } from '@tributary/core/service';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InsightDocument, migrations, TenantStat, ThemeStat } from '../src/entities.ts';
import { aggregate, insightsService } from '../src/service.ts';

const available = await servicesAvailable();
const log = createLogger({ service: 'test', level: 'silent' });

function event(type: 'analysis.completed' | 'analysis.failed' | 'analysis.cancelled', tenant: string, documentId: string, themes: string[] = [], traceparent?: string): ParsedEvent {
  const at = new Date().toISOString();
  const data =
    type === 'analysis.completed'
      ? { documentId, jobId: randomUUID(), summary: 's', themes: themes.map((name) => ({ name, score: 0.5 })), keywords: [], sentiment: { label: 'NEUTRAL', score: 0 }, provider: 'offline', model: 'm', tokens: { prompt: 1, completion: 1 }, attempts: 1, completedAt: at }
      : type === 'analysis.failed'
        ? { documentId, jobId: randomUUID(), error: { code: 'X', message: 'm' }, attempts: 3, failedAt: at }
        : { documentId, jobId: randomUUID(), attempts: 1, tokens: { prompt: 40, completion: 0 }, cancelledAt: at };
  return parse(JSON.stringify({ id: randomUUID(), type, source: 'test', specversion: '1.0', time: at, dataschema: `${type}/v1`, subject: documentId, tenantid: tenant, traceparent, data }));
}

describe.skipIf(!available)('the insights aggregates on PostgreSQL', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  beforeAll(async () => {
    db = await openTestDatabase(target, { entities: [InsightDocument, ThemeStat, TenantStat], migrations, logger: log, poolSize: 4 });
  });
  afterAll(async () => {
    await db?.close();
    await dropTestDatabase(target);
  });

  const context = (em: HandlerContext['em']): HandlerContext => ({ em, publish: (e: readonly NewEvent[]) => publish(em, 'insights', e).then(() => undefined), log, attempt: 1, lastAttempt: false, afterTransaction: () => {} });
  const apply = (events: ParsedEvent[]) => db.fork().transactional((em) => aggregate(events, context(em)));
  /** The `insights.updated` events in the outbox for a tenant, oldest first. */
  const announced = async (tenant: string) =>
    (await db.fork().execute<{ payload: string }[]>(`select payload from tributary_outbox where type = 'insights.updated' and tenant_id = ? order by id`, [tenant])).map(
      (r) => JSON.parse(r.payload) as Envelope<InsightsUpdated>,
    );
  const stats = async (tenant: string) =>
    (await db.fork().execute<{ analyzed: number; failed: number; cancelled: number }[]>(`select analyzed, failed, cancelled from tenant_stats where tenant_id = '${tenant}'`))[0];
  const theme = async (tenant: string, name: string) => (await db.fork().execute<{ document_count: number }[]>(`select document_count from theme_stats where tenant_id = '${tenant}' and name = '${name}'`))[0]?.document_count;

  it('applies concurrent batches over the same tenants and themes in opposite orders without a deadlock', async () => {
    const tenants = ['t-a', 't-b', 't-c'];
    const names = ['alpha', 'beta', 'gamma', 'delta'];
    for (let round = 0; round < 20; round++) {
      const forwards = tenants.flatMap((t) => Array.from({ length: 5 }, () => event('analysis.completed', t, randomUUID(), names)));
      const backwards = [...tenants].reverse().flatMap((t) => Array.from({ length: 5 }, () => event('analysis.completed', t, randomUUID(), [...names].reverse())));
      await Promise.all([apply(forwards), apply(backwards)]);
    }
    for (const t of tenants) {
      expect(await stats(t)).toEqual({ analyzed: 200, failed: 0, cancelled: 0 });
      for (const name of names) expect(await theme(t, name)).toBe(200);
    }
  });

  it('counts each document once, and moves one that failed and then completed from failed to analyzed', async () => {
    const tenant = `t-${randomUUID()}`;
    const doc = randomUUID();
    await apply([event('analysis.failed', tenant, doc), event('analysis.failed', tenant, doc)]);
    expect(await stats(tenant)).toEqual({ analyzed: 0, failed: 1, cancelled: 0 });
    // A theme named twice in one analysis counts once.
    await apply([event('analysis.completed', tenant, doc, ['Solar', 'solar ']), event('analysis.completed', tenant, doc, ['solar'])]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 0, cancelled: 0 });
    expect(await theme(tenant, 'solar')).toBe(1);
    await apply([event('analysis.failed', tenant, doc)]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 0, cancelled: 0 });
  });

  it('announces each tenant whose aggregates changed once per batch, with its totals after the fold and the changed themes', async () => {
    const [a, b, idle] = [`t-a-${randomUUID()}`, `t-b-${randomUUID()}`, `t-idle-${randomUUID()}`];
    const failedThenCompleted = randomUUID();
    const seen = randomUUID();
    await apply([event('analysis.failed', a, failedThenCompleted), event('analysis.completed', idle, seen, ['Old'])]);
    expect((await announced(a)).map((e) => e.data)).toEqual([expect.objectContaining({ documents: 1, analyzed: 0, failed: 1, cancelled: 0, themes: [] })]);
    expect(await announced(idle)).toHaveLength(1);

    const trace = (n: number) => `00-${randomUUID().replaceAll('-', '')}-${String(n).padStart(16, '0')}-01`;
    const lastOfA = event('analysis.completed', a, randomUUID(), ['pricing'], trace(3));
    const lastOfB = event('analysis.failed', b, randomUUID(), [], trace(4));
    await apply([
      event('analysis.completed', a, failedThenCompleted, ['Solar', 'Pricing '], trace(1)),
      event('analysis.completed', b, randomUUID(), ['wind'], trace(2)),
      // A repeat for a tenant the batch otherwise leaves alone.
      event('analysis.completed', idle, seen, ['other']),
      lastOfA,
      lastOfB,
    ]);

    const [, updatedA] = await announced(a);
    expect((await announced(a)).length).toBe(2);
    expect(updatedA).toMatchObject({ type: 'insights.updated', source: 'insights', dataschema: 'insights.updated/v1', subject: a, tenantid: a });
    expect(updatedA!.data).toEqual({ documents: 2, analyzed: 2, failed: 0, cancelled: 0, themes: ['pricing', 'solar'], updatedAt: expect.any(String) });
    const updatedB = await announced(b);
    expect(updatedB.map((e) => e.data)).toEqual([{ documents: 2, analyzed: 1, failed: 1, cancelled: 0, themes: ['wind'], updatedAt: expect.any(String) }]);
    // Each announcement continues the trace of its tenant's last event in the batch.
    expect(updatedA!.traceparent!.split('-')[1]).toBe(lastOfA.traceparent!.split('-')[1]);
    expect(updatedB[0]!.traceparent!.split('-')[1]).toBe(lastOfB.traceparent!.split('-')[1]);
    expect(await announced(idle)).toHaveLength(1);
    expect(await stats(a)).toEqual({ analyzed: 2, failed: 0, cancelled: 0 });
  });

  it('announces nothing when the fold rolls back', async () => {
    const tenant = `t-${randomUUID()}`;
    await expect(
      db.fork().transactional(async (em) => {
        await aggregate([event('analysis.completed', tenant, randomUUID(), ['solar'])], context(em));
        throw new Error('rolled back after the fold');
      }),
    ).rejects.toThrow('rolled back after the fold');
    expect(await announced(tenant)).toEqual([]);
    expect(await stats(tenant)).toBeUndefined();
  });

  it('announces nothing for a redelivered or repeated result', async () => {
    const tenant = `t-${randomUUID()}`;
    const doc = randomUUID();
    const completed = event('analysis.completed', tenant, doc, ['solar']);
    await apply([completed]);
    expect(await announced(tenant)).toHaveLength(1);
    // The same event again (its inbox row lost with a restored backup, say), another completion
    // of the same document, and a late failure of it: none changes the aggregates.
    await apply([completed]);
    await apply([event('analysis.completed', tenant, doc, ['solar', 'wind']), event('analysis.failed', tenant, doc)]);
    expect(await announced(tenant)).toHaveLength(1);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 0, cancelled: 0 });
  });

  it('counts a cancelled document as cancelled, once, as a failed one is counted as failed, and announces it', async () => {
    const tenant = `t-${randomUUID()}`;
    const [done, broken, cancelled] = [randomUUID(), randomUUID(), randomUUID()];
    await apply([event('analysis.completed', tenant, done, ['solar']), event('analysis.failed', tenant, broken), event('analysis.cancelled', tenant, cancelled), event('analysis.cancelled', tenant, cancelled)]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 1, cancelled: 1 });
    expect((await announced(tenant)).map((e) => e.data)).toEqual([{ documents: 3, analyzed: 1, failed: 1, cancelled: 1, themes: ['solar'], updatedAt: expect.any(String) }]);
    const [row] = await db.fork().execute<{ status: string }[]>(`select status from insight_documents where tenant_id = '${tenant}' and document_id = '${cancelled}'`);
    expect(row?.status).toBe('CANCELLED');
  });

  it('keeps a cancelled document cancelled: no later result of it changes the aggregates or is announced', async () => {
    const tenant = `t-${randomUUID()}`;
    const doc = randomUUID();
    await apply([event('analysis.cancelled', tenant, doc)]);
    await apply([event('analysis.completed', tenant, doc, ['solar']), event('analysis.failed', tenant, doc), event('analysis.cancelled', tenant, doc)]);
    expect(await stats(tenant)).toEqual({ analyzed: 0, failed: 0, cancelled: 1 });
    expect(await theme(tenant, 'solar')).toBeUndefined();
    expect(await announced(tenant)).toHaveLength(1);
    // And a document that ended otherwise is not cancelled after it.
    const completed = randomUUID();
    const failed = randomUUID();
    await apply([event('analysis.completed', tenant, completed), event('analysis.failed', tenant, failed)]);
    await apply([event('analysis.cancelled', tenant, completed), event('analysis.cancelled', tenant, failed)]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 1, cancelled: 1 });
    expect(await announced(tenant)).toHaveLength(2);
  });

  it('answers stats with the cancelled count, part of documents', async () => {
    const tenant = `t-${randomUUID()}`;
    await apply([event('analysis.completed', tenant, randomUUID()), event('analysis.cancelled', tenant, randomUUID()), event('analysis.cancelled', tenant, randomUUID())]);
    const secret = 'insights-test-secret-insights-test-secret-01';
    const service = await startService(insightsService, {
      env: { INSIGHTS_DATABASE_URL: `${target.url.replace(/\/[^/]*$/, '')}/${target.dbName}`, INTERNAL_SIGNING_SECRET: secret, LOG_LEVEL: 'silent' },
      port: 0,
      host: '127.0.0.1',
      logger: log,
    });
    try {
      const stats = async (tenantId: string) => {
        const response = await fetch(service.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...signIdentity(secret, { tenantId, userId: 'u' }) },
          body: JSON.stringify({ query: '{ stats { documents analyzed failed cancelled } }' }),
        });
        return ((await response.json()) as { data: { stats: unknown } }).data.stats;
      };
      expect(await stats(tenant)).toEqual({ documents: 3, analyzed: 1, failed: 0, cancelled: 2 });
      expect(await stats(`t-nobody-${randomUUID()}`)).toEqual({ documents: 0, analyzed: 0, failed: 0, cancelled: 0 });
    } finally {
      await service.stop();
    }
  });

  it('keeps the aggregates of a database from before cancellation, with none cancelled', async () => {
    const old = randomDatabaseTarget();
    const before = await openTestDatabase(old, { migrations: migrations.slice(0, 1), logger: log, poolSize: 1 });
    try {
      await before.fork().execute(`insert into tenant_stats (tenant_id, analyzed, failed) values ('t-old', 4, 1)`);
      await before.fork().execute(`insert into insight_documents (tenant_id, document_id, status, updated_at) values ('t-old', 'd-old', 'FAILED', now())`);
      await before.close();
      const after = await openTestDatabase(old, { entities: [InsightDocument, ThemeStat, TenantStat], migrations, logger: log, poolSize: 1 });
      try {
        const em = after.fork();
        expect(await em.execute(`select analyzed, failed, cancelled from tenant_stats where tenant_id = 't-old'`)).toEqual([{ analyzed: 4, failed: 1, cancelled: 0 }]);
        await em.transactional((tx) => aggregate([event('analysis.cancelled', 't-old', 'd-new')], context(tx)));
        expect(await em.execute(`select analyzed, failed, cancelled from tenant_stats where tenant_id = 't-old'`)).toEqual([{ analyzed: 4, failed: 1, cancelled: 1 }]);
      } finally {
        await after.close();
      }
    } finally {
      await before.close().catch(() => {});
      await dropTestDatabase(old);
    }
  });
});
