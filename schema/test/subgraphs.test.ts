import { describe, expect, it } from 'vitest';
import { subgraphs } from '../src/compose.ts';
import { loadSubgraphServices, workspaceSubgraphs } from '../src/subgraphs.ts';

describe('the workspace’s subgraphs', () => {
  const workspace = workspaceSubgraphs();

  it('are the packages under subgraphs/, each once, by name', () => {
    const names = workspace.map((s) => s.name);
    expect(names.length).toBeGreaterThan(0);
    expect(names).toEqual([...new Set(names)].sort());
    for (const s of workspace) {
      expect(s.dir).toBe(`subgraphs/${s.name}`);
      expect(s.packageName).toBe(`@tributary/${s.name}`);
    }
  });

  it('load as the definitions their packages export, named as their folders', { timeout: 60_000 }, async () => {
    const definitions = await loadSubgraphServices();
    expect(definitions.map((d) => d.name)).toEqual(workspace.map((s) => s.name));
    for (const [i, { packageName }] of workspace.entries()) expect(Object.values(await import(packageName))).toContain(definitions[i]);
  });

  it('are the subgraphs the supergraph is composed of, at their default ports', { timeout: 60_000 }, async () => {
    const definitions = await loadSubgraphServices();
    expect(subgraphs.map((s) => s.name).sort()).toEqual(workspace.map((s) => s.name));
    for (const source of subgraphs) {
      const definition = definitions.find((d) => d.name === source.name)!;
      expect(source.url, source.name).toBe(`http://localhost:${definition.defaultPort}/graphql`);
    }
  });
});
