/**
 * The repository files a new subgraph is added to, as text edits: each takes a file's text and
 * returns the new one, or throws when the file no longer has the shape it expects (then nothing
 * is written). The rest of the service list is derived from the subgraphs/ folders
 * (schema/src/subgraphs.ts): pnpm dev, the composition, the build, the image folders, the tests
 * and the benchmarks need no edit.
 */
import type { SubgraphPlan } from './plan.ts';

/** An edit that found no place to go: the file changed shape; the generator stops before writing. */
export class EditError extends Error {
  override readonly name = 'EditError';
}

function insertBefore(text: string, anchor: string | RegExp, insert: string, file: string): string {
  const at = typeof anchor === 'string' ? text.indexOf(anchor) : text.search(anchor);
  if (at < 0) throw new EditError(`${file}: found no ${String(anchor)} to add the subgraph before`);
  return text.slice(0, at) + insert + text.slice(at);
}

/** schema/package.json: the subgraph as a dependency, so `loadSubgraphServices` can import it by name. */
export function schemaPackageJson(text: string, p: SubgraphPlan): string {
  const pkg = JSON.parse(text) as { dependencies?: Record<string, string> };
  const dependencies = { ...pkg.dependencies, [`@tributary/${p.name}`]: 'workspace:*' };
  pkg.dependencies = Object.fromEntries(Object.entries(dependencies).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

/** docker-compose.yml: a service block (its database, the broker), and the gateway's URL of it and wait for it. */
export function dockerCompose(text: string, p: SubgraphPlan): string {
  const file = 'docker-compose.yml';
  const block = `  ${p.name}:
    <<: *service
    build: { <<: *build, args: { SERVICE: ${p.name} } }
    environment:
      <<: *environment
      PORT: ${p.port}
      ${p.constant}_DATABASE_URL: postgres://\${POSTGRES_USER:-tributary}:\${POSTGRES_PASSWORD:-tributary}@postgres:5432/tributary_${p.name}
      DATABASE_POOL_SIZE:
      IDEMPOTENCY_KEY_TTL_HOURS:
      INBOX_RETENTION_HOURS:
      OUTBOX_RETENTION_MINUTES:
    depends_on: *infrastructure

`;
  let out = insertBefore(text, /^ {2}gateway:\n/m, block, file);
  // The gateway reaches it by its compose name; the user's own SUBGRAPH_URLS still follow.
  out = insertBefore(out, /\$\{SUBGRAPH_URLS:\+/, `,${p.name}=http://${p.name}:${p.port}/graphql`, file);
  const gatewayAt = out.search(/^ {2}gateway:\n/m);
  const waits = /( {4}depends_on:\n(?: {6}[\w-]+: \{ condition: service_healthy \}\n)+)/g;
  waits.lastIndex = gatewayAt;
  const match = waits.exec(out);
  if (!match) throw new EditError(`${file}: found no gateway depends_on list of \`<service>: { condition: service_healthy }\``);
  const end = match.index + match[0].length;
  return `${out.slice(0, end)}      ${p.name}: { condition: service_healthy }\n${out.slice(end)}`;
}

/** docker/postgres-init.sql: the subgraph's database, created on a fresh volume. */
export function postgresInit(text: string, p: SubgraphPlan): string {
  return `${text.replace(/\n*$/, '\n')}CREATE DATABASE tributary_${p.name};\n`;
}

/** Dockerfile: the subgraph's default port in the image's health check (used when PORT is unset). */
export function dockerfile(text: string, p: SubgraphPlan): string {
  const map = /(const ports = \{[^}]*?)( \};)/;
  if (!map.test(text)) throw new EditError('Dockerfile: found no `const ports = { … };` in the HEALTHCHECK');
  return text.replace(map, `$1, ${p.name}: ${p.port}$2`);
}

/** `wordcount.updated` → `wordcountUpdated`. */
export const camel = (type: string) => type.replace(/\.([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** packages/contracts/src/events.ts: the published event's v1 contract, registered and current. */
export function contractsEvents(text: string, p: SubgraphPlan): string {
  if (!p.publishes) return text;
  const file = 'packages/contracts/src/events.ts';
  const constant = `${camel(p.publishes)}V1`;
  const contract = `/**
 * A tenant's ${p.name} view after a fold that changed it: one per tenant and batch, published by
 * the ${p.name} service in the fold's transaction. The counts are the tenant's after the fold.
 */
export const ${constant} = z.object({
  /** The event versions this fold changed, each with the tenant's count of them after it. */
  counts: z.array(z.object({ type: z.string().min(1), count: z.number().int().min(1) })),
  updatedAt: isoTime,
});

`;
  let out = insertBefore(text, /\/\*\*\n \* Registry of every contract/, contract, file);
  out = insertBefore(out, /\} as const;\n\nexport type DataSchema/, `  '${p.publishes}/v1': ${constant},\n`, file);
  out = insertBefore(out, /\} as const satisfies Record<EventType, DataSchema>;/, `  '${p.publishes}': '${p.publishes}/v1',\n`, file);
  const typeName = camel(p.publishes).replace(/^./, (c) => c.toUpperCase());
  return `${out.replace(/\n*$/, '\n')}export type ${typeName} = EventData<'${p.publishes}/v1'>;\n`;
}

/** schema/events/samples/<type>.v1.json: the golden payload `schema:check` parses with the contract. */
export function contractSample(p: SubgraphPlan): string {
  return `${JSON.stringify({ counts: [{ type: p.consumes[0], count: 3 }], updatedAt: '2026-11-28T08:00:03.000Z' }, null, 2)}\n`;
}

/** schema/operations/<name>.graphql: the client's operations on it, which `schema:check` validates against the API. */
export function operations(p: SubgraphPlan): string {
  const selection = `{\n    events\n    byType {\n      type\n      count\n      lastSeenAt\n    }\n  }`;
  const subscription = p.publishes ? `\n\n# Each change of the view, as it is folded.\nsubscription ${p.pascal}Updated {\n  ${p.name}Updated ${selection}\n}` : '';
  return `# The caller's ${p.name} view.\nquery ${p.pascal}View {\n  ${p.name} ${selection}\n}${subscription}\n`;
}
