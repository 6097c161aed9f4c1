import type { ParsedEvent } from '@tributary/contracts';
import { parse } from '@tributary/contracts';
import { createLogger } from '@tributary/core';
import type { Database } from '@tributary/core/db';
import { publish, type NewEvent } from '@tributary/core/events';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InsightDocument, migrations, TenantStat, ThemeStat } from '../src/entities.ts';
import { aggregate } from '../src/service.ts';

const available = await servicesAvailable();
const log = createLogger({ service: 'test', level: 'silent' });

function event(type: 'analysis.completed' | 'analysis.failed', tenant: string, documentId: string, themes: string[] = []): ParsedEvent {
  const at = new Date().toISOString();
  const data =
    type === 'analysis.completed'
      ? { documentId, jobId: randomUUID(), summary: 's', themes: themes.map((name) => ({ name, score: 0.5 })), keywords: [], sentiment: { label: 'NEUTRAL', score: 0 }, provider: 'offline', model: 'm', tokens: { prompt: 1, completion: 1 }, attempts: 1, completedAt: at }
      : { documentId, jobId: randomUUID(), error: { code: 'X', message: 'm' }, attempts: 3, failedAt: at };
  return parse(JSON.stringify({ id: randomUUID(), type, source: 'test', specversion: '1.0', time: at, dataschema: `${type}/v1`, subject: documentId, tenantid: tenant, data }));
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

  const apply = (events: ParsedEvent[]) =>
    db.fork().transactional((em) => aggregate(events, { em, publish: (e: readonly NewEvent[]) => publish(em, 'insights', e).then(() => undefined), log, attempt: 1, lastAttempt: false }));
  const stats = async (tenant: string) => (await db.fork().execute<{ analyzed: number; failed: number }[]>(`select analyzed, failed from tenant_stats where tenant_id = '${tenant}'`))[0];
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
      expect(await stats(t)).toEqual({ analyzed: 200, failed: 0 });
      for (const name of names) expect(await theme(t, name)).toBe(200);
    }
  });

  it('counts each document once, and moves one that failed and then completed from failed to analyzed', async () => {
    const tenant = `t-${randomUUID()}`;
    const doc = randomUUID();
    await apply([event('analysis.failed', tenant, doc), event('analysis.failed', tenant, doc)]);
    expect(await stats(tenant)).toEqual({ analyzed: 0, failed: 1 });
    // A theme named twice in one analysis counts once.
    await apply([event('analysis.completed', tenant, doc, ['Solar', 'solar ']), event('analysis.completed', tenant, doc, ['solar'])]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 0 });
    expect(await theme(tenant, 'solar')).toBe(1);
    await apply([event('analysis.failed', tenant, doc)]);
    expect(await stats(tenant)).toEqual({ analyzed: 1, failed: 0 });
  });
});
