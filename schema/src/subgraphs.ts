/**
 * The workspace's subgraphs, derived once from its folders: every package under
 * `subgraphs/<name>/`. `pnpm dev` (apps/dev) starts their definitions in one process, the
 * end-to-end tests and the benchmarks start them as processes, and the deployment test checks
 * their settings; none keeps a list of its own. What a subgraph is beyond its folder (its
 * default port, settings, schema) its package's ServiceDefinition says ({@link loadSubgraphServices}).
 */
import type { ServiceDefinition } from '@tributary/core/service';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One subgraph package of the workspace. */
export interface WorkspaceSubgraph {
  /**
   * The service's name: its folder, its ServiceDefinition's `name`, its name in the supergraph,
   * its database (`tributary_<name>`) and its queues (`<ns>.<name>.*`).
   */
  name: string;
  /** Its package folder, relative to the workspace root: `subgraphs/<name>`. */
  dir: string;
  /** Its package (`@tributary/<name>`); the package's main entry exports its ServiceDefinition. */
  packageName: string;
}

/** The root of this workspace (the default for {@link workspaceSubgraphs}). */
export const workspaceRoot = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The subgraph packages under `<root>/subgraphs/` (each folder with a package.json), by name.
 * `root` may be another checkout of the repo (a benchmark's baseline): its own subgraphs.
 */
export function workspaceSubgraphs(root: string = workspaceRoot): WorkspaceSubgraph[] {
  const dir = join(root, 'subgraphs');
  return readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(dir, entry.name, 'package.json')))
    .map((entry) => ({
      name: entry.name,
      dir: `subgraphs/${entry.name}`,
      packageName: (JSON.parse(readFileSync(join(dir, entry.name, 'package.json'), 'utf8')) as { name: string }).name,
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const isDefinitionOf = (name: string, value: unknown): value is ServiceDefinition =>
  typeof value === 'object' && value !== null && (value as ServiceDefinition).name === name && typeof (value as ServiceDefinition).defaultPort === 'number' && (value as ServiceDefinition).typeDefs?.kind === 'Document';

/**
 * Each workspace subgraph's ServiceDefinition, the very object its package exports, in
 * {@link workspaceSubgraphs}' order. Imports every subgraph (this package depends on each, as
 * composing the supergraph needs); a package exporting no definition of its folder's name, or
 * two, is an error.
 */
export async function loadSubgraphServices(): Promise<ServiceDefinition[]> {
  return Promise.all(
    workspaceSubgraphs().map(async ({ name, packageName }) => {
      const exported = new Set(Object.values((await import(packageName)) as Record<string, unknown>));
      const found = [...exported].filter((value) => isDefinitionOf(name, value));
      if (found.length !== 1) throw new Error(`${packageName} exports ${found.length} ServiceDefinitions named "${name}"; a subgraph package exports one, named as its folder`);
      return found[0]!;
    }),
  );
}
