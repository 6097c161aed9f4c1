import { ConfigError } from '@tributary/core';
import { defaultSupergraphPath, supergraphSubgraphNames } from '@tributary/gateway';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startEmbedded, subgraphServices } from '../src/index.ts';

const subgraphsDir = fileURLToPath(new URL('../../../subgraphs/', import.meta.url));

/** The subgraphs of the workspace: each folder under subgraphs/ with a package.json, and that package's name. */
const workspaceSubgraphs = readdirSync(subgraphsDir, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && existsSync(join(subgraphsDir, entry.name, 'package.json')))
  .map((entry) => ({ dir: entry.name, pkg: (JSON.parse(readFileSync(join(subgraphsDir, entry.name, 'package.json'), 'utf8')) as { name: string }).name }));

const running = subgraphServices.map((s) => s.name);

describe('the embedded system', () => {
  it('refuses a production embedded start without authentication', async () => {
    await expect(startEmbedded({ env: { NODE_ENV: 'production', TRIBUTARY_DATA_DIR: 'memory://' }, port: 0 })).rejects.toBeInstanceOf(ConfigError);
  });

  it('runs each subgraph of the workspace once, as its own package defines it', async () => {
    expect(workspaceSubgraphs.length).toBeGreaterThan(0);
    expect(new Set(running).size, `twice in ${running.join(', ')}`).toBe(running.length);
    expect([...running].sort()).toEqual(workspaceSubgraphs.map((s) => s.dir).sort());
    for (const { dir, pkg } of workspaceSubgraphs) {
      // The very definition its package exports, not one of the embedded system's making.
      const exported = Object.values(await import(pkg));
      expect(exported, `${pkg} exports the definition the embedded system starts as ${dir}`).toContain(subgraphServices.find((s) => s.name === dir));
    }
  });

  it('runs every subgraph of the supergraph its gateway serves, and none besides', () => {
    // startEmbedded leaves SUPERGRAPH_PATH to the caller: by default the gateway serves the
    // committed supergraph, and a subgraph of it the system did not start would be sent to the
    // URL composed into it (a port nothing here listens on).
    const composed = supergraphSubgraphNames(readFileSync(defaultSupergraphPath, 'utf8'));
    expect([...composed].sort()).toEqual([...running].sort());
  });
});
