import { pageSize } from '@tributary/core/graphql';
import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { aggregate } from './aggregate.ts';
import { InsightDocument, migrations, TenantStat, ThemeStat } from './entities.ts';
import { typeDefs } from './schema.ts';

export { aggregate } from './aggregate.ts';

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
  // Every row of these tables comes from the aggregates fold, so `pnpm views:rebuild insights`
  // can recompute them from the log; insights.updated only announces their state, so a rebuild drops it.
  views: { tables: ['insight_documents', 'theme_stats', 'tenant_stats'], consumers: ['aggregates'], announcements: ['insights.updated'] },
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
