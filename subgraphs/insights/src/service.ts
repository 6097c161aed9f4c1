import type { ParsedEvent } from '@tributary/contracts';
import { pageSize } from '@tributary/core/graphql';
import type { HandlerContext, NewEvent } from '@tributary/core/events';
import { queryRows, queryRun, valuesPlaceholders } from '@tributary/core/db';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { InsightDocument, migrations, TenantStat, ThemeStat, type Outcome } from './entities.ts';
import { typeDefs } from './schema.ts';

/** The outcome each analysis result event reports. */
const outcomeOf: Partial<Record<string, Outcome>> = {
  'analysis.completed/v1': 'COMPLETED',
  'analysis.failed/v1': 'FAILED',
  'analysis.cancelled/v1': 'CANCELLED',
};
type Result = ParsedEvent<'analysis.completed/v1' | 'analysis.failed/v1' | 'analysis.cancelled/v1'>;
const isResult = (event: ParsedEvent): event is Result => outcomeOf[event.dataschema] !== undefined;

/** A text-array key that sorts like the composite primary key it stands for. */
const byKey = (a: [string, string], b: [string, string]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

/**
 * Fold a batch of analysis results into the tenants' aggregates, once per document. A document
 * that FAILED and later COMPLETED (a replayed dead letter) moves from failed to analyzed; a
 * CANCELLED one is counted as cancelled, as a failed one is counted as failed, and stays so (a
 * cancelled job is terminal: analysis publishes no other result for it); any other repeat
 * changes nothing. The batch's changes are summed in memory and written with one
 * statement per table; every table's rows are locked in key order (documents, then tenants, then
 * themes), so concurrent batches wait for each other instead of deadlocking. A document first
 * seen by two batches at once makes one of them fail on its primary key and be retried event by
 * event, when it finds the other's row. Each tenant whose aggregates changed gets one
 * `insights.updated` with its totals after the fold, written to the outbox last (new rows only,
 * no lock another batch waits on); a batch of repeats changes nothing and announces nothing.
 */
export async function aggregate(events: ParsedEvent[], { em, publish }: HandlerContext): Promise<void> {
  const byDocument = new Map<string, { key: [string, string]; events: Result[] }>();
  // Each tenant's last event in delivery order: its announcement continues that trace.
  const lastOfTenant = new Map<string, ParsedEvent>();
  for (const event of events) {
    if (!isResult(event)) continue;
    lastOfTenant.set(event.tenantid, event);
    const key: [string, string] = [event.tenantid, event.data.documentId];
    const id = JSON.stringify(key);
    const entry = byDocument.get(id);
    if (entry) entry.events.push(event);
    else byDocument.set(id, { key, events: [event] });
  }
  if (byDocument.size === 0) return;
  const documents = [...byDocument.values()].sort((a, b) => byKey(a.key, b.key));
  const known = await queryRows<{ tenant_id: string; document_id: string; status: Outcome }>(
    em,
    `select d.tenant_id, d.document_id, d.status from insight_documents d
     join unnest(?::text[], ?::text[]) as k (tenant_id, document_id) using (tenant_id, document_id)
     order by d.tenant_id, d.document_id for update of d`,
    [documents.map((d) => d.key[0]), documents.map((d) => d.key[1])],
  );
  const previous = new Map(known.map((r) => [JSON.stringify([r.tenant_id, r.document_id]), r.status]));
  const now = new Date().toISOString();
  const tenants = new Map<string, { analyzed: number; failed: number; cancelled: number }>();
  const themes = new Map<string, { key: [string, string]; count: number; scoreSum: number; lastSeenAt: string }>();
  const created: unknown[] = [];
  const changed: unknown[] = [];
  for (const { key, events: documentEvents } of documents) {
    const id = JSON.stringify(key);
    const before = previous.get(id);
    let status = before;
    const counts = tenants.get(key[0]) ?? { analyzed: 0, failed: 0, cancelled: 0 };
    for (const event of documentEvents) {
      const outcome = outcomeOf[event.dataschema]!;
      if (status === 'COMPLETED' || status === 'CANCELLED' || (status === 'FAILED' && outcome !== 'COMPLETED')) continue;
      if (event.dataschema === 'analysis.completed/v1') {
        counts.analyzed++;
        if (status === 'FAILED') counts.failed--;
        // A theme named twice in one analysis counts once, with its best score.
        const best = new Map<string, number>();
        for (const theme of event.data.themes) {
          const name = theme.name.trim().toLowerCase();
          if (name) best.set(name, Math.max(best.get(name) ?? 0, theme.score));
        }
        for (const [name, score] of best) {
          const themeId = JSON.stringify([key[0], name]);
          const theme = themes.get(themeId) ?? { key: [key[0], name], count: 0, scoreSum: 0, lastSeenAt: event.data.completedAt };
          theme.count++;
          theme.scoreSum += score;
          if (event.data.completedAt > theme.lastSeenAt) theme.lastSeenAt = event.data.completedAt;
          themes.set(themeId, theme);
        }
      } else if (outcome === 'FAILED') {
        counts.failed++;
      } else {
        counts.cancelled++;
      }
      status = outcome;
    }
    tenants.set(key[0], counts);
    if (status === before || status === undefined) continue;
    (before === undefined ? created : changed).push(key[0], key[1], status, now);
  }
  if (created.length > 0) {
    await queryRun(em, `insert into insight_documents (tenant_id, document_id, status, updated_at) values ${valuesPlaceholders(created.length / 4, 4)}`, created);
  }
  if (changed.length > 0) {
    await queryRun(
      em,
      `update insight_documents d set status = v.status, updated_at = v.updated_at::timestamptz
       from (values ${valuesPlaceholders(changed.length / 4, 4)}) as v (tenant_id, document_id, status, updated_at)
       where d.tenant_id = v.tenant_id and d.document_id = v.document_id`,
      changed,
    );
  }
  // A document's first result adds to analyzed, failed or cancelled and FAILED -> COMPLETED adds
  // to analyzed, so a tenant has a nonzero delta exactly when the batch changed its aggregates
  // (themes only change with analyzed).
  const tenantRows = [...tenants].filter(([, c]) => c.analyzed !== 0 || c.failed !== 0 || c.cancelled !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (tenantRows.length === 0) return;
  const totals = await queryRows<{ tenant_id: string; analyzed: number; failed: number; cancelled: number }>(
    em,
    `insert into tenant_stats (tenant_id, analyzed, failed, cancelled)
     select v.tenant_id, v.analyzed::int, v.failed::int, v.cancelled::int
     from (values ${valuesPlaceholders(tenantRows.length, 4)}) as v (tenant_id, analyzed, failed, cancelled) order by v.tenant_id
     on conflict (tenant_id) do update set analyzed = tenant_stats.analyzed + excluded.analyzed, failed = tenant_stats.failed + excluded.failed,
       cancelled = tenant_stats.cancelled + excluded.cancelled
     returning tenant_id, analyzed, failed, cancelled`,
    tenantRows.flatMap(([tenant, c]) => [tenant, c.analyzed, c.failed, c.cancelled]),
  );
  const themeRows = [...themes.values()].sort((a, b) => byKey(a.key, b.key));
  if (themeRows.length > 0) {
    await queryRun(
      em,
      `insert into theme_stats (tenant_id, name, document_count, score_sum, last_seen_at)
       select v.tenant_id, v.name, v.document_count::int, v.score_sum::double precision, v.last_seen_at::timestamptz
       from (values ${valuesPlaceholders(themeRows.length, 5)}) as v (tenant_id, name, document_count, score_sum, last_seen_at) order by v.tenant_id, v.name
       on conflict (tenant_id, name) do update set document_count = theme_stats.document_count + excluded.document_count,
         score_sum = theme_stats.score_sum + excluded.score_sum,
         last_seen_at = greatest(theme_stats.last_seen_at, excluded.last_seen_at)`,
      themeRows.flatMap((t) => [t.key[0], t.key[1], t.count, t.scoreSum, t.lastSeenAt]),
    );
  }
  const changedThemes = new Map<string, string[]>();
  for (const { key: [tenant, name] } of themeRows) {
    const names = changedThemes.get(tenant);
    if (names) names.push(name);
    else changedThemes.set(tenant, [name]);
  }
  const byTenant = new Map(totals.map((r) => [r.tenant_id, r]));
  const announce: NewEvent<'insights.updated'>[] = tenantRows.map(([tenant]) => {
    const row = byTenant.get(tenant)!;
    return {
      type: 'insights.updated',
      subject: tenant,
      tenantId: tenant,
      causedBy: lastOfTenant.get(tenant)!,
      data: {
        documents: row.analyzed + row.failed + row.cancelled,
        analyzed: row.analyzed,
        failed: row.failed,
        cancelled: row.cancelled,
        themes: changedThemes.get(tenant) ?? [],
        updatedAt: now,
      },
    };
  });
  await publish(announce);
}

/** The tenant's most frequent themes, best first. */
async function topThemes(args: { first?: number | null }, ctx: SubgraphContext) {
  const rows = await ctx.em.find(ThemeStat, { tenantId: ctx.tenantId }, { orderBy: { documentCount: 'desc', name: 'asc' }, limit: pageSize(args.first, 10) });
  return rows.map((t) => ({
    name: t.name,
    documentCount: t.documentCount,
    averageScore: Math.round((Number(t.scoreSum) / t.documentCount) * 1000) / 1000,
    lastSeenAt: t.lastSeenAt.toISOString(),
  }));
}

export const insightsService: ServiceDefinition = {
  name: 'insights',
  typeDefs,
  entities: [InsightDocument, ThemeStat, TenantStat],
  migrations,
  defaultPort: 4004,
  consumers: () => [{ name: 'aggregates', types: ['analysis.completed', 'analysis.failed', 'analysis.cancelled'], batchHandler: aggregate }],
  resolvers: {
    Query: {
      themes: (_: unknown, args: { first?: number | null }, ctx: SubgraphContext) => topThemes(args, ctx),
      stats: async (_: unknown, __: unknown, ctx: SubgraphContext) => {
        const row = await ctx.em.findOne(TenantStat, { tenantId: ctx.tenantId });
        const analyzed = row?.analyzed ?? 0;
        const failed = row?.failed ?? 0;
        const cancelled = row?.cancelled ?? 0;
        return { documents: analyzed + failed + cancelled, analyzed, failed, cancelled };
      },
    },
    Stats: {
      themes: (_: unknown, args: { first?: number | null }, ctx: SubgraphContext) => topThemes(args, ctx),
    },
  },
};
