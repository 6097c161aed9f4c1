/**
 * The files of a new subgraph package, as text: subgraphs/<name>/{package.json, src/*}. Modelled
 * on subgraphs/insights (a view fed by events): a batch consumer folds the events into a table
 * with one statement, a query reads the caller's tenant's rows, and, when it publishes, each fold
 * announces what it changed in the same transaction (the outbox).
 */
import type { SubgraphPlan } from './plan.ts';

const q = (value: string) => `'${value}'`;
/** The event type of a version: `analysis.completed/v1` → `analysis.completed`. */
export const typeOf = (version: string) => version.split('/')[0]!;
const unique = (values: string[]) => [...new Set(values)];

export function packageJson(p: SubgraphPlan): string {
  const catalog = (names: string[]) => Object.fromEntries(names.map((n) => [n, 'catalog:']));
  // What core needs at run time: the bundle (scripts/build.ts) imports these, and the image's
  // `pnpm deploy --prod` installs only the package's own dependencies.
  const dependencies = catalog([
    '@mikro-orm/core',
    'graphql',
    'graphql-tag',
    'zod',
    '@apollo/server',
    '@apollo/subgraph',
    '@electric-sql/pglite',
    '@mikro-orm/migrations',
    '@mikro-orm/postgresql',
    '@opentelemetry/api',
    '@opentelemetry/exporter-trace-otlp-http',
    '@opentelemetry/resources',
    '@opentelemetry/sdk-trace-base',
    'amqplib',
    'ioredis',
    '@nats-io/jetstream',
    '@nats-io/transport-node',
    'mikro-orm-pglite',
    'pg',
    'pino',
    'prom-client',
  ]);
  const pkg = {
    name: `@tributary/${p.name}`,
    version: '0.1.0',
    private: true,
    type: 'module',
    exports: { '.': './src/index.ts', './schema': './src/schema.ts' },
    files: ['dist'],
    scripts: { start: 'exec node --enable-source-maps --max-semi-space-size=64 dist/main.js' },
    dependencies,
    devDependencies: { '@tributary/contracts': 'workspace:*', '@tributary/core': 'workspace:*', tsx: 'catalog:' },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

export const indexTs = (p: SubgraphPlan) => `export { typeDefs } from './schema.ts';
export { ${p.name}Service } from './service.ts';
`;

export const mainTs = (p: SubgraphPlan) => `import { runServiceMain } from '@tributary/core/service';
import { ${p.name}Service } from './service.ts';

await runServiceMain(${p.name}Service);
`;

export function schemaTs(p: SubgraphPlan): string {
  const event = p.publishes ? `${p.publishes}/v1` : undefined;
  const changedBy = event ? ` @changedBy(event: "${event}")` : '';
  const link = event
    ? `extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@shareable", "@composeDirective"]) \${eventsSpecLink}
  \${eventDirectiveDefinitions}`
    : 'extend schema @link(url: "https://specs.apollo.dev/federation/v2.7", import: ["@shareable"])';
  const subscription = event
    ? `
  type Subscription {
    "A message whenever the caller's view changes (a fold of new events)."
    ${p.name}Updated: ${p.pascal}! @eventSubscription(events: ["${event}"], entity: "${p.pascal}", lookup: "${p.name}")
  }
`
    : '';
  const promise = event ? `\n  # Every change of the view is published as ${p.publishes}, in the fold's transaction (the cache relies on it).` : '';
  return `${event ? "import { eventDirectiveDefinitions, eventsSpecLink } from '@tributary/core/bindings';\n" : ''}import { gql } from 'graphql-tag';

export const typeDefs = gql\`
  ${link}

  "An ISO-8601 date-time with offset, e.g. 2026-11-28T08:00:00.000Z."
  scalar DateTime

  type Query {
    "The caller's events as the ${p.name} service has folded them into its own view (per tenant)."
    ${p.name}: ${p.pascal}!
  }
${subscription}${promise}
  type ${p.pascal}${changedBy} {
    "Events folded, every type together."
    events: Int!
    "One entry per event type and version, by type."
    byType: [${p.pascal}EventCount!]!
  }

  type ${p.pascal}EventCount${changedBy} {
    "The event's type and version, e.g. ${p.consumes[0]}."
    type: String!
    count: Int!
    "When the latest of them was published."
    lastSeenAt: DateTime!
  }
\`;
`;
}

export const entitiesTs = (p: SubgraphPlan) => `import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

/** How many events of one type and version the view has folded for a tenant. */
export const EventCount = defineEntity({
  name: '${p.pascal}EventCount',
  tableName: '${p.name}_event_counts',
  properties: (p) => ({
    tenantId: p.text().primary(),
    eventType: p.text().primary(),
    count: p.integer(),
    lastSeenAt: p.datetime(),
  }),
  primaryKeys: ['tenantId', 'eventType'],
});
export type EventCount = InferEntity<typeof EventCount>;

class Create${p.pascal} extends Migration {
  override up(): void {
    this.addSql(\`create table ${p.name}_event_counts (
      tenant_id text not null, event_type text not null,
      count integer not null, last_seen_at timestamptz not null,
      primary key (tenant_id, event_type))\`);
  }
}

/** Applied in order, once each. A released migration is never edited: a change is a new one, appended. */
export const migrations = [{ name: '0001-${p.name}', class: Create${p.pascal} }];
`;

export function foldTs(p: SubgraphPlan): string {
  const publishing = p.publishes !== undefined;
  return `import type { DataSchema, ParsedEvent } from '@tributary/contracts';
import { queryRows, valuesPlaceholders } from '@tributary/core/db';
import type { HandlerContext${publishing ? ', NewEvent' : ''} } from '@tributary/core/events';

/**
 * The event versions this view folds. The consumer is bound to their types and receives every
 * version of them: a new version is folded only once it is added here (and its shape read).
 */
export const FOLDED: ReadonlySet<DataSchema> = new Set<DataSchema>([${p.consumes.map(q).join(', ')}]);

/** What one batch adds to a tenant's count of one event version. */
export interface CountDelta {
  tenantId: string;
  eventType: DataSchema;
  count: number;
  /** The latest \`time\` among them. */
  lastSeenAt: string;
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * A batch as one delta per (tenant, event version), in key order. Versions this view does not
 * fold are left out. Pure, so the unit test covers the rules without a database.
 */
export function countDeltas(events: readonly ParsedEvent[]): CountDelta[] {
  const deltas = new Map<string, CountDelta>();
  for (const event of events) {
    if (!FOLDED.has(event.dataschema)) continue;
    const key = JSON.stringify([event.tenantid, event.dataschema]);
    const delta = deltas.get(key);
    if (!delta) deltas.set(key, { tenantId: event.tenantid, eventType: event.dataschema, count: 1, lastSeenAt: event.time });
    else {
      delta.count++;
      // Compared as instants: two producers may write different offsets.
      if (Date.parse(event.time) > Date.parse(delta.lastSeenAt)) delta.lastSeenAt = event.time;
    }
  }
  return [...deltas.values()].sort((a, b) => compare(a.tenantId, b.tenantId) || compare(a.eventType, b.eventType));
}

type CountRow = { tenant_id: string; event_type: string; count: number };

/**
 * Fold a batch into the view with one statement: each delta is added to its row (created by the
 * first event). It runs in the consumer's transaction, which also records every event id in the
 * inbox, so a redelivered event is dropped there and never counted twice. Rows are written in key
 * order, so concurrent batches over the same rows wait for each other instead of deadlocking.${
    publishing
      ? `
 * Each tenant whose counts changed gets one \`${p.publishes}\` with its changed counts after the
 * fold, written to the outbox in the same transaction: it is published if and only if the fold
 * commits.`
      : ''
  }
 */
export async function foldEvents(events: ParsedEvent[], { em${publishing ? ', publish' : ''} }: HandlerContext): Promise<void> {
  const deltas = countDeltas(events);
  if (deltas.length === 0) return;
  ${publishing ? 'const rows = ' : ''}await queryRows<CountRow>(
    em,
    \`insert into ${p.name}_event_counts (tenant_id, event_type, count, last_seen_at)
     select v.tenant_id, v.event_type, v.count::int, v.last_seen_at::timestamptz
     from (values \${valuesPlaceholders(deltas.length, 4)}) as v (tenant_id, event_type, count, last_seen_at) order by v.tenant_id, v.event_type
     on conflict (tenant_id, event_type) do update set count = ${p.name}_event_counts.count + excluded.count,
       last_seen_at = greatest(${p.name}_event_counts.last_seen_at, excluded.last_seen_at)
     returning tenant_id, event_type, count\`,
    deltas.flatMap((d) => [d.tenantId, d.eventType, d.count, d.lastSeenAt]),
  );${publishing ? announce(p) : ''}
}
`;
}

function announce(p: SubgraphPlan): string {
  return `
  // Each announcement continues the trace of its tenant's last event in the batch.
  const lastOfTenant = new Map(events.map((e) => [e.tenantid, e]));
  const byTenant = new Map<string, CountRow[]>();
  for (const row of rows) byTenant.set(row.tenant_id, [...(byTenant.get(row.tenant_id) ?? []), row]);
  const updatedAt = new Date().toISOString();
  const announcements: NewEvent<'${p.publishes}'>[] = [...byTenant].sort(([a], [b]) => compare(a, b)).map(([tenantId, changed]) => ({
    type: '${p.publishes}',
    subject: tenantId,
    tenantId,
    causedBy: lastOfTenant.get(tenantId)!,
    data: { counts: changed.map((r) => ({ type: r.event_type, count: r.count })).sort((a, b) => compare(a.type, b.type)), updatedAt },
  }));
  await publish(announcements);`;
}

export function serviceTs(p: SubgraphPlan): string {
  const types = unique(p.consumes.map(typeOf));
  return `import type { ServiceDefinition, SubgraphContext } from '@tributary/core/service';
import { EventCount, migrations } from './entities.ts';
import { foldEvents } from './fold.ts';
import { typeDefs } from './schema.ts';

export { countDeltas, foldEvents, FOLDED } from './fold.ts';

/** The caller's tenant's view: its rows, by event type. */
async function view(ctx: SubgraphContext) {
  const rows = await ctx.em.find(EventCount, { tenantId: ctx.tenantId }, { orderBy: { eventType: 'asc' } });
  return {
    events: rows.reduce((sum, row) => sum + row.count, 0),
    byType: rows.map((row) => ({ type: row.eventType, count: row.count, lastSeenAt: row.lastSeenAt.toISOString() })),
  };
}

/** The ${p.name} subgraph: a view of ${p.consumes.join(', ')}${p.publishes ? `, announced by ${p.publishes}` : ''}. */
export const ${p.name}Service: ServiceDefinition = {
  name: '${p.name}',
  typeDefs,
  entities: [EventCount],
  migrations,
  defaultPort: ${p.port},
  // Queue <ns>.${p.name}.view, with its retry tiers and dead letters; a batch handler, as views fold best in batches.
  consumers: () => [{ name: 'view', types: [${types.map(q).join(', ')}], batchHandler: foldEvents }],
  resolvers: {
    Query: {
      ${p.name}: (_: unknown, __: unknown, ctx: SubgraphContext) => view(ctx),
    },
  },
};
`;
}
