import { ConfigError } from '@tributary/core';
import { defaultSupergraphPath, supergraphSubgraphNames } from '@tributary/gateway';
import { workspaceSubgraphs } from '@tributary/schema/subgraphs';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { gatewaySubgraphUrls, startEmbedded } from '../src/index.ts';

describe('the embedded system', () => {
  it('refuses a production embedded start without authentication', async () => {
    await expect(startEmbedded({ env: { NODE_ENV: 'production', TRIBUTARY_DATA_DIR: 'memory://' }, port: 0 })).rejects.toBeInstanceOf(ConfigError);
  });

  it('runs every subgraph of the supergraph its gateway serves, and none besides', () => {
    // startEmbedded runs the workspace's subgraphs and leaves SUPERGRAPH_PATH to the caller: by
    // default the gateway serves the committed supergraph, and a subgraph of it the system did not
    // start would be sent to the URL composed into it (a port nothing here listens on).
    const composed = supergraphSubgraphNames(readFileSync(defaultSupergraphPath, 'utf8'));
    expect([...composed].sort()).toEqual(workspaceSubgraphs().map((s) => s.name));
  });
});

describe('the gateway’s subgraph URL settings', () => {
  it('names a subgraph in its own setting where the gateway has one, the others in SUBGRAPH_URLS', () => {
    expect(gatewaySubgraphUrls({ documents: 'http://d/graphql', webhooks: 'http://w/graphql' })).toEqual({ DOCUMENTS_URL: 'http://d/graphql', SUBGRAPH_URLS: 'webhooks=http://w/graphql' });
  });

  it('keeps the caller’s entries for other subgraphs and drops theirs for these', () => {
    const env = gatewaySubgraphUrls({ webhooks: 'http://w/graphql' }, ' tickets=http://t/graphql, webhooks=http://old/graphql,');
    expect(env).toEqual({ SUBGRAPH_URLS: 'webhooks=http://w/graphql,tickets=http://t/graphql' });
  });
});
