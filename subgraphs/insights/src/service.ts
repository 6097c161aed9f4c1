import type { ParsedEvent } from '@tributary/contracts';
import { pageSize } from '@tributary/core/graphql';
import type { HandlerContext } from '@tributary/core/events';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { InsightDocument, migrations, TenantStat, ThemeStat } from './entities.ts';
import { typeDefs } from './schema.ts';

/**
 * Fold an analysis result into the tenant's aggregates, once per document. A document that
 * FAILED and later COMPLETED (a replayed dead letter) moves from failed to analyzed; any
 * other repeat changes nothing.
 */
async function aggregate(event: ParsedEvent, { em }: HandlerContext): Promise<void> {
  if (event.dataschema !== 'analysis.completed/v1' && event.dataschema !== 'analysis.failed/v1') return;
  const tenantId = event.tenantid;
  const completed = event.dataschema === 'analysis.completed/v1';
  const status = completed ? 'COMPLETED' : 'FAILED';
  const now = new Date();
  const previous = await em.findOne(InsightDocument, { tenantId, documentId: event.data.documentId });
  if (previous && (previous.status === 'COMPLETED' || !completed)) return;

  const at = completed ? event.data.completedAt : event.data.failedAt;
  await em.execute(
    `insert into tenant_stats (tenant_id, analyzed, failed) values (?, ?, ?)
     on conflict (tenant_id) do update set analyzed = tenant_stats.analyzed + excluded.analyzed, failed = tenant_stats.failed + excluded.failed`,
    [tenantId, completed ? 1 : 0, completed ? (previous ? -1 : 0) : 1],
  );
  if (event.dataschema === 'analysis.completed/v1') {
    // A theme named twice in one analysis counts once, with its best score.
    const themes = new Map<string, number>();
    for (const theme of event.data.themes) {
      const name = theme.name.trim().toLowerCase();
      if (name) themes.set(name, Math.max(themes.get(name) ?? 0, theme.score));
    }
    for (const [name, score] of themes) {
      await em.execute(
        `insert into theme_stats (tenant_id, name, document_count, score_sum, last_seen_at) values (?, ?, 1, ?, ?)
         on conflict (tenant_id, name) do update set document_count = theme_stats.document_count + 1,
           score_sum = theme_stats.score_sum + excluded.score_sum,
           last_seen_at = greatest(theme_stats.last_seen_at, excluded.last_seen_at)`,
        [tenantId, name, score, new Date(at)],
      );
    }
  }
  if (previous) {
    previous.status = status;
    previous.updatedAt = now;
  } else {
    em.create(InsightDocument, { tenantId, documentId: event.data.documentId, status, updatedAt: now });
  }
}

export const insightsService: ServiceDefinition = {
  name: 'insights',
  typeDefs,
  entities: [InsightDocument, ThemeStat, TenantStat],
  migrations,
  defaultPort: 4004,
  consumers: () => [{ name: 'aggregates', types: ['analysis.completed', 'analysis.failed'], handler: aggregate }],
  resolvers: {
    Query: {
      themes: async (_: unknown, args: { first?: number | null }, ctx: SubgraphContext) => {
        const rows = await ctx.em.find(ThemeStat, { tenantId: ctx.tenantId }, { orderBy: { documentCount: 'desc', name: 'asc' }, limit: pageSize(args.first, 10) });
        return rows.map((t) => ({
          name: t.name,
          documentCount: t.documentCount,
          averageScore: Math.round((Number(t.scoreSum) / t.documentCount) * 1000) / 1000,
          lastSeenAt: t.lastSeenAt.toISOString(),
        }));
      },
      stats: async (_: unknown, __: unknown, ctx: SubgraphContext) => {
        const row = await ctx.em.findOne(TenantStat, { tenantId: ctx.tenantId });
        const analyzed = row?.analyzed ?? 0;
        const failed = row?.failed ?? 0;
        return { documents: analyzed + failed, analyzed, failed };
      },
    },
  },
};
