/**
 * `pnpm schema:compose`: print each subgraph's SDL from its code into
 * `schema/subgraphs/<name>.graphql`, compose them with @apollo/composition into
 * `schema/supergraph.graphql`, and write a JSON Schema snapshot `schema/events/<type>.v<n>.json`
 * for every event contract version that has none yet. Output is deterministic, so the committed
 * files are checkable (`pnpm schema:check`).
 */
import { composeServices, type CompositionResult, type CompositionSuccess } from '@apollo/composition';
import { buildSubgraphSchema, printSubgraphSchema } from '@apollo/subgraph';
import { contracts } from '@tributary/contracts';
import type { DocumentNode } from 'graphql';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventFileName, eventSnapshot } from './events.ts';
import { graphql } from './graphql-js.ts';
import { loadSubgraphServices } from './subgraphs.ts';

const { parse, print } = graphql;

/** A subgraph to compose: its name, the URL it listens on by default and its type definitions. */
export interface SubgraphSource {
  name: string;
  url: string;
  typeDefs: DocumentNode;
}

/**
 * Every subgraph of the workspace ({@link loadSubgraphServices}: the packages under subgraphs/),
 * with the URL it listens on by default, from its ServiceDefinition's `defaultPort` (the gateway
 * overrides them from config). A new subgraph is composed with no edit here. In port order, the
 * order they were composed in when this list was kept by hand: the supergraph's text follows it.
 */
export const subgraphs: SubgraphSource[] = (await loadSubgraphServices())
  .sort((a, b) => a.defaultPort - b.defaultPort)
  .map((definition) => ({ name: definition.name, url: `http://localhost:${definition.defaultPort}/graphql`, typeDefs: definition.typeDefs }));

/** The SDL a subgraph serves at `_service { sdl }`, as printed from its code. */
export function subgraphSdl(typeDefs: DocumentNode): string {
  return `${printSubgraphSchema(buildSubgraphSchema({ typeDefs })).trim()}\n`;
}

/** The result of a composition, with the SDLs it was composed from. */
export interface Composed {
  /** Each subgraph's SDL by name; composition error locations are offsets into these. */
  sdls: Record<string, string>;
  result: CompositionResult;
}

/** Composes subgraphs from the SDL they serve, as the gateway does. */
export function composeSubgraphs(sources: readonly SubgraphSource[]): Composed {
  const sdls: Record<string, string> = {};
  for (const s of sources) {
    try {
      sdls[s.name] = subgraphSdl(s.typeDefs);
    } catch {
      // An invalid subgraph: composition reports the same problem with its code and the subgraph's name.
      sdls[s.name] = `${print(s.typeDefs)}\n`;
    }
  }
  const result = composeServices(sources.map((s) => ({ name: s.name, url: s.url, typeDefs: parse(sdls[s.name]!) })));
  return { sdls, result };
}

/** Composes the repo's {@link subgraphs}. */
export function compose(): Composed {
  return composeSubgraphs(subgraphs);
}

/** The `schema/` folder of the repo. */
export const schemaDir = fileURLToPath(new URL('..', import.meta.url));

/** The repository root; every path in {@link paths} is relative to it. */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Paths of the files the schema tooling reads and writes, relative to the repo root. */
export const paths = {
  supergraph: 'schema/supergraph.graphql',
  subgraphsDir: 'schema/subgraphs',
  subgraph: (name: string) => `schema/subgraphs/${name}.graphql`,
  eventsDir: 'schema/events',
  samplesDir: 'schema/events/samples',
  operationsDir: 'schema/operations',
  approvedChanges: 'schema/approved-changes.json',
} as const;

/** The generated GraphQL files by repo-relative path: each subgraph's SDL and the supergraph. */
export function generatedFiles(sdls: Readonly<Record<string, string>>, result: CompositionSuccess): Record<string, string> {
  const files: Record<string, string> = {};
  for (const [name, sdl] of Object.entries(sdls)) files[paths.subgraph(name)] = sdl;
  files[paths.supergraph] = `${result.supergraphSdl.trim()}\n`;
  return files;
}

/** The snapshot file text of an event contract. */
export function snapshotText(contract: Parameters<typeof eventSnapshot>[0]): string {
  return `${JSON.stringify(eventSnapshot(contract), null, 2)}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { sdls, result } = compose();
  if (result.errors) {
    for (const error of result.errors) console.error(`composition error ${String(error.extensions['code'] ?? '')}: ${error.message}`);
    process.exit(1);
  }
  const files = generatedFiles(sdls, result);
  mkdirSync(join(repoRoot, paths.subgraphsDir), { recursive: true });
  // A removed subgraph's SDL would otherwise linger and read as drift forever.
  for (const f of readdirSync(join(repoRoot, paths.subgraphsDir)))
    if (f.endsWith('.graphql') && !(`${paths.subgraphsDir}/${f}` in files)) rmSync(join(repoRoot, paths.subgraphsDir, f));
  for (const [file, text] of Object.entries(files)) writeFileSync(join(repoRoot, file), text);
  for (const hint of result.hints) console.warn(`hint ${hint.definition.code}: ${hint.message}`);
  console.log(`composed ${subgraphs.length} subgraphs into ${paths.supergraph}`);

  // Snapshots are history: events written in a version's committed shape may still sit in
  // queues, the DLQ or replays, so an existing snapshot is never rewritten.
  mkdirSync(join(repoRoot, paths.eventsDir), { recursive: true });
  for (const [dataschema, contract] of Object.entries(contracts)) {
    const file = `${paths.eventsDir}/${eventFileName(dataschema)}`;
    if (existsSync(join(repoRoot, file))) continue;
    writeFileSync(join(repoRoot, file), snapshotText(contract));
    console.log(`wrote the snapshot ${file}`);
  }
}
