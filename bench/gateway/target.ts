/**
 * Child process of `pnpm bench:gateway`: one gateway over the fixture's supergraph
 * (BENCH_SUPERGRAPH, a file), on a free loopback port. `process.argv[2]` says which:
 *   apollo       @apollo/gateway + @apollo/server with their defaults (startStandaloneServer)
 *   apollo-fast  the same with FastDataSource as every subgraph's data source
 *   hive         @graphql-hive/gateway's createGatewayRuntime({ supergraph }) on node:http
 *   hive-cache   the same with Hive Gateway's response cache on (see hiveCache)
 *   hive-rust    the same with Hive Router's Rust query planner and its executor
 *                (@graphql-hive/router-runtime's unifiedGraphHandler, what the `hive-gateway` CLI's
 *                --hive-router-runtime flag turns on); loaded only for this target
 *   ours         Tributary's startGateway (auth, signed identity to subgraphs, limits, tracing
 *                context, metrics, graphql-ws) as the tree has it: IdentityDataSource extends
 *                FastDataSource (undici keep-alive pools, de-duplicated representations);
 *                BENCH_AUTH_SECRET verifies tokens
 *   ours-before  ours with FastDataSource's additions undone (Apollo's default fetcher, every
 *                representation sent): the gateway as it was before FastDataSource
 *   ours-undici  ours without de-duplication; ours-dedup: ours with Apollo's default fetcher
 *   ours-apollo-executor  ours with GATEWAY_EXECUTOR=apollo: Apollo Gateway runs the plans, as
 *                before our executor (gateway/src/executor)
 *   ours-cache   ours with the event-invalidated cache on for User, Product and Review, its
 *                invalidations read from RabbitMQ (BENCH_AMQP_URL, BENCH_NAMESPACE), where the
 *                fixture's mutations announce their changes
 */
import { ApolloGateway } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { createGatewayRuntime, LocalForageCacheStorage } from '@graphql-hive/gateway';
import { FastDataSource, startGateway } from '@tributary/gateway';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from './ipc.ts';
import { configureFastDataSource } from './patch.ts';

const kind = process.argv[2] ?? '';
const supergraphPath = process.env.BENCH_SUPERGRAPH;
if (!supergraphPath) throw new Error('BENCH_SUPERGRAPH is not set');
const supergraphSdl = readFileSync(supergraphPath, 'utf8');
const host = '127.0.0.1';

async function startApollo(fast: boolean): Promise<{ url: string; stop: () => Promise<void> }> {
  const gateway = new ApolloGateway({ supergraphSdl, ...(fast ? { buildService: ({ url }) => new FastDataSource({ url: url! }) } : {}) });
  const server = new ApolloServer({ gateway });
  const { url } = await startStandaloneServer(server, { listen: { port: 0, host } });
  return { url: new URL('/graphql', url).toString(), stop: () => server.stop() };
}

/**
 * Hive Gateway's own response cache (`hive-cache`): one cache for every user (`session: () =>
 * null`; the benchmark has one tenant), entries kept BENCH_HIVE_CACHE_TTL_MS (default 10 000) and
 * dropped early when a mutation through this gateway returns the entity (its default
 * `invalidateViaMutation`, by `id` fields). Within the TTL it may answer stale: the mix reports
 * each target's freshness.
 */
const hiveCache = () => ({ session: () => null, ttl: Number(process.env.BENCH_HIVE_CACHE_TTL_MS ?? 10_000) });

async function startHive(variant: 'hive' | 'hive-cache' | 'hive-rust'): Promise<{ url: string; stop: () => Promise<void> }> {
  // Imported here so that no other target loads the Rust planner's native addon.
  const rust = variant === 'hive-rust' ? { unifiedGraphHandler: (await import('@graphql-hive/router-runtime')).unifiedGraphHandler } : {};
  // The cache store the `hive-gateway` CLI makes when none is configured (localforage, in memory on Node).
  const cache = variant === 'hive-cache' ? { cache: new LocalForageCacheStorage(), responseCaching: hiveCache() } : {};
  const gateway = createGatewayRuntime({ supergraph: supergraphSdl, logging: 'error', ...cache, ...rust });
  const server = createServer(gateway);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    url: `http://${host}:${(server.address() as AddressInfo).port}/graphql`,
    stop: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await gateway.dispose();
    },
  };
}

async function startOurs(): Promise<{ url: string; stop: () => Promise<void> }> {
  const secret = process.env.BENCH_AUTH_SECRET;
  if (!secret) throw new Error('BENCH_AUTH_SECRET is not set');
  if (kind === 'ours-before') configureFastDataSource({ fetcher: 'default', dedupe: false });
  if (kind === 'ours-undici') configureFastDataSource({ fetcher: 'undici', dedupe: false });
  if (kind === 'ours-dedup') configureFastDataSource({ fetcher: 'default', dedupe: true });
  if (!['ours', 'ours-before', 'ours-undici', 'ours-dedup', 'ours-cache', 'ours-apollo-executor'].includes(kind)) throw new Error(`unknown gateway "${kind}"`);
  const cache =
    kind === 'ours-cache'
      ? { GATEWAY_CACHE_TYPES: 'User,Product,Review', AMQP_URL: process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672', TRIBUTARY_NAMESPACE: process.env.BENCH_NAMESPACE ?? `bench_${process.pid}` }
      : { TRIBUTARY_NAMESPACE: `bench_${process.pid}` };
  const gateway = await startGateway({
    env: {
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      AUTH_JWT_SECRET: secret,
      INTERNAL_SIGNING_SECRET: randomBytes(32).toString('base64url'),
      SUPERGRAPH_PATH: supergraphPath,
      ...cache,
      ...(kind === 'ours-apollo-executor' ? { GATEWAY_EXECUTOR: 'apollo' } : {}),
      // The benchmark query is deeper and costlier than our defaults allow; the rules still run.
      QUERY_MAX_DEPTH: process.env.BENCH_QUERY_MAX_DEPTH ?? '20',
      QUERY_MAX_COST: process.env.BENCH_QUERY_MAX_COST ?? '1000000',
    },
    port: 0,
    host,
  });
  return { url: gateway.url, stop: () => gateway.stop() };
}

const running = kind === 'apollo' || kind === 'apollo-fast' ? await startApollo(kind === 'apollo-fast') : kind === 'hive' || kind === 'hive-cache' || kind === 'hive-rust' ? await startHive(kind) : kind.startsWith('ours') ? await startOurs() : undefined;
if (!running) throw new Error(`unknown gateway "${kind}"`);
// A CPU profile of the measured window only (not start-up, not tsx's loader thread).
const inspector = new Session();
serve(
  {
    profileStart: async () => {
      inspector.connect();
      await inspector.post('Profiler.enable');
      await inspector.post('Profiler.setSamplingInterval', { interval: 1000 });
      await inspector.post('Profiler.start');
    },
    profileStop: async () => {
      const { profile } = await inspector.post('Profiler.stop');
      const file = join(process.env.BENCH_PROFILE_DIR ?? '.', `${kind}-${process.pid}.cpuprofile`);
      writeFileSync(file, JSON.stringify(profile));
      inspector.disconnect();
      return file;
    },
  },
  running.stop,
);
process.send!({ type: 'ready', url: running.url });
