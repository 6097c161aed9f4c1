/**
 * `pnpm schema:compose`: print each subgraph's SDL from its code into
 * `schema/subgraphs/<name>.graphql` and compose them with @apollo/composition into
 * `schema/supergraph.graphql`. Output is deterministic, so the committed files are checkable.
 */
import { composeServices, type CompositionResult } from '@apollo/composition';
import { buildSubgraphSchema, printSubgraphSchema } from '@apollo/subgraph';
import { typeDefs as analysis } from '@tributary/analysis/schema';
import { typeDefs as documents } from '@tributary/documents/schema';
import { typeDefs as insights } from '@tributary/insights/schema';
import { typeDefs as jobs } from '@tributary/jobs/schema';
import { parse, type DocumentNode } from 'graphql';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Every subgraph with the URL it listens on by default (the gateway overrides them from config). */
export const subgraphs: { name: string; url: string; typeDefs: DocumentNode }[] = [
  { name: 'documents', url: 'http://localhost:4001/graphql', typeDefs: documents },
  { name: 'jobs', url: 'http://localhost:4002/graphql', typeDefs: jobs },
  { name: 'analysis', url: 'http://localhost:4003/graphql', typeDefs: analysis },
  { name: 'insights', url: 'http://localhost:4004/graphql', typeDefs: insights },
];

/** The SDL a subgraph serves at `_service { sdl }`, as printed from its code. */
export function subgraphSdl(typeDefs: DocumentNode): string {
  return `${printSubgraphSchema(buildSubgraphSchema({ typeDefs })).trim()}\n`;
}

export interface Composed {
  sdls: Record<string, string>;
  result: CompositionResult;
}

export function compose(): Composed {
  const sdls: Record<string, string> = {};
  for (const s of subgraphs) sdls[s.name] = subgraphSdl(s.typeDefs);
  const result = composeServices(subgraphs.map((s) => ({ name: s.name, url: s.url, typeDefs: parse(sdls[s.name]!) })));
  return { sdls, result };
}

export const schemaDir = fileURLToPath(new URL('..', import.meta.url));

if (import.meta.url === `file://${process.argv[1]}`) {
  const { sdls, result } = compose();
  if (result.errors) {
    for (const error of result.errors) console.error(`composition error ${error.extensions?.code ?? ''}: ${error.message}`);
    process.exit(1);
  }
  mkdirSync(`${schemaDir}/subgraphs`, { recursive: true });
  for (const [name, sdl] of Object.entries(sdls)) writeFileSync(`${schemaDir}/subgraphs/${name}.graphql`, sdl);
  writeFileSync(`${schemaDir}/supergraph.graphql`, `${result.supergraphSdl.trim()}\n`);
  for (const hint of result.hints ?? []) console.warn(`hint ${hint.definition.code}: ${hint.message}`);
  console.log(`composed ${subgraphs.length} subgraphs into schema/supergraph.graphql`);
}
