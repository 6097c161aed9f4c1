import { ConfigError } from '@tributary/core/config';
import { BindingError, checkBindings, eventTypeOf, readBindings, type Bindings, type Path } from '@tributary/core/bindings';
import type { GraphQLSchema } from 'graphql';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { entityKeys, invalidationRules, type EntityCache, type SupergraphInput } from './cache/index.ts';
import { subgraphUrlOverrides, supergraphSubgraphNames, supergraphSubgraphUrls, type GatewayConfig } from './config.ts';
import type { HubBindings } from './event-hub.ts';

/*
 * What the gateway reads from a supergraph, under its validated settings: the event bindings
 * (subscriptions, what its queue binds, the cache's rules) and where each subgraph is.
 */

export const defaultSupergraphPath = fileURLToPath(new URL('../../schema/supergraph.graphql', import.meta.url));

/** The supergraph SUPERGRAPH_PATH names (default: this repository's). */
export function readSupergraph(config: GatewayConfig): string {
  return readFileSync(config.SUPERGRAPH_PATH ?? defaultSupergraphPath, 'utf8');
}

/**
 * What the gateway needs from a supergraph's event bindings: the subscriptions, what its queue
 * binds, and the cache's rules.
 * @throws BindingError when a binding is broken (the directives, or what they name in `apiSchema`)
 */
export function eventBindings(sdl: string, apiSchema: GraphQLSchema | undefined): Bindings {
  const { bindings, problems } = readBindings(sdl);
  if (apiSchema && problems.length === 0) problems.push(...checkBindings(bindings, apiSchema, entityKeys(sdl)));
  if (problems.length > 0) throw new BindingError(problems);
  return bindings;
}

/** The event types the gateway's queue binds (the subscriptions', and the cache's), and the paths the hub indexes events by. */
export function hubBindings(bindings: Bindings, cache: EntityCache | undefined): HubBindings {
  const paths = new Map<string, Path[]>();
  for (const b of bindings.subscriptions) {
    const first = b.match[0];
    for (const event of b.events) {
      if (!first) continue;
      const list = paths.get(event) ?? [];
      if (!list.some((p) => p.join('.') === first.path.join('.'))) list.push(first.path);
      paths.set(event, list);
    }
  }
  const types = [...bindings.subscriptions.flatMap((b) => b.events.map(eventTypeOf)), ...(cache?.eventTypes ?? [])];
  return { types: [...new Set(types)], paths };
}

/** What the cache takes from a supergraph: its rules (`@changedBy`), the types changed as a whole, the keys. */
export function cacheInput(bindings: Bindings, sdl: string): SupergraphInput {
  return { rules: invalidationRules(bindings.changes), wholeTypes: [...new Set(bindings.changes.filter((c) => !c.key).map((c) => c.type))], supergraphSdl: sdl };
}

/** Where a supergraph's subgraphs are reached. */
export interface SubgraphRouting {
  /** Subgraph URLs that replace the supergraph's, by name. */
  overrides: Record<string, string>;
  /** The uploads subgraph's GraphQL endpoint (its files endpoints are beside it); undefined: no uploads. */
  uploadsUrl: string | undefined;
}

/**
 * Where the subgraphs of `sdl` are, by the settings.
 * @throws ConfigError when an override names no subgraph of the supergraph
 */
export function subgraphRouting(config: GatewayConfig, sdl: string): SubgraphRouting {
  const overrides = subgraphUrlOverrides(config, supergraphSubgraphNames(sdl));
  return { overrides, uploadsUrl: uploadsUrl(config, sdl, overrides) };
}

/**
 * A GATEWAY_UPLOADS_SUBGRAPH set by hand must name a subgraph of the supergraph the gateway
 * starts with (the default turns uploads off when it does not).
 * @throws ConfigError
 */
export function checkUploadsSubgraph(config: GatewayConfig, sdl: string): void {
  const name = uploadsSubgraph(config);
  if (name && config.explicit.GATEWAY_UPLOADS_SUBGRAPH && !supergraphSubgraphNames(sdl).includes(name)) {
    throw new ConfigError([{ key: 'GATEWAY_UPLOADS_SUBGRAPH', message: `the supergraph has no subgraph named "${name}"` }]);
  }
}

const uploadsSubgraph = (config: GatewayConfig): string | undefined => (config.GATEWAY_UPLOADS_SUBGRAPH === 'none' ? undefined : config.GATEWAY_UPLOADS_SUBGRAPH);

function uploadsUrl(config: GatewayConfig, sdl: string, overrides: Record<string, string>): string | undefined {
  const name = uploadsSubgraph(config);
  return name ? (overrides[name] ?? supergraphSubgraphUrls(sdl)[name]) : undefined;
}
