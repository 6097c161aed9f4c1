import { ApolloServer, type BaseContext } from '@apollo/server';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { buildSubgraphSchema } from '@apollo/subgraph';
import type { DocumentNode } from 'graphql';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Database } from './db/index.ts';
import type { EventConsumer } from './events/consumer.ts';
import type { OutboxRelay } from './events/relay.ts';
import type { Transport } from './events/transport.ts';
import { errorMessage } from './errors.ts';
import { formatSubgraphError, refuseUnstorableInput, resolverTimings, retryAfterPlugin } from './apollo-plugins.ts';
import { createHttpHandler, type ExtraRoutes } from './http-handler.ts';
import type { ResolverMap } from './graphql.ts';

export { formatSubgraphError, refuseUnstorableInput, retryAfterPlugin, retryAfterSeconds } from './apollo-plugins.ts';
export { createHttpHandler, HttpRequestError, PREFLIGHT_HEADERS, sendJson, type ExtraRoutes, type HttpHandlerOptions } from './http-handler.ts';

export interface SubgraphOptions<TContext extends BaseContext> {
  name: string;
  typeDefs: DocumentNode;
  resolvers: ResolverMap<TContext>;
  db: Database;
  transport: Transport;
  logger: Logger;
  relay?: OutboxRelay;
  consumers?: EventConsumer[];
  /** Builds the per-request context; called with a fresh EntityManager fork. */
  context: (args: { req: IncomingMessage; db: Database }) => Promise<TContext>;
  /** Largest request body accepted, in bytes. Default 2 MiB. */
  maxBodyBytes?: number;
  /** Production mode: no introspection, no stack traces in errors. Default: NODE_ENV of the process. */
  production?: boolean;
  /** Close the transport on stop (false when it is shared with other services). Default true. */
  closeTransport?: boolean;
  /** Answers routes other than /graphql, /health, /ready and /metrics (return false to 404). */
  routes?: ExtraRoutes;
}

export interface Subgraph {
  readonly name: string;
  /** `http://host:port/graphql` once listening. */
  readonly url: string;
  listen(port?: number, host?: string): Promise<string>;
  /** Graceful: stop consuming, finish in-flight work, flush the relay, close server, broker, database. */
  stop(): Promise<void>;
}

/**
 * Connections the kernel completes and queues for a server whose event loop is busy (capped by
 * `net.core.somaxconn`). Node's default, 511, drops new connections under a burst that a
 * saturated process takes seconds to accept: clients then fail to connect instead of waiting.
 */
export const LISTEN_BACKLOG = 4096;

/** Apollo Server over the subgraph's schema, draining `http` when it stops. */
function subgraphApollo<TContext extends BaseContext>(options: SubgraphOptions<TContext>, http: Server, production: boolean): ApolloServer<TContext> {
  const { logger } = options;
  return new ApolloServer<TContext>({
    schema: buildSubgraphSchema({ typeDefs: options.typeDefs, resolvers: options.resolvers as ResolverMap<unknown> }),
    // We own shutdown (consumers, relay and connections stop in order); Apollo's own signal
    // handlers would race ours.
    stopOnTerminationSignals: false,
    introspection: !production,
    includeStacktraceInErrorResponses: !production,
    formatError: formatSubgraphError,
    // Inline traces are for Apollo Studio; we trace with our own context and logs.
    plugins: [ApolloServerPluginDrainHttpServer({ httpServer: http }), ApolloServerPluginInlineTraceDisabled(), resolverTimings(options.name), refuseUnstorableInput, retryAfterPlugin],
    logger: {
      debug: (m: unknown) => logger.debug(String(m)),
      info: (m: unknown) => logger.info(String(m)),
      warn: (m: unknown) => logger.warn(String(m)),
      error: (m: unknown) => logger.error(String(m)),
    },
  });
}

/**
 * A federated subgraph service: Apollo Server 5 over `buildSubgraphSchema`, on a small node:http
 * server that also answers `/health` (process alive) and `/ready` (database and broker reachable).
 * It owns the lifecycle of the service's relay and consumers so shutdown happens in the right
 * order.
 */
export async function createSubgraph<TContext extends BaseContext>(options: SubgraphOptions<TContext>): Promise<Subgraph> {
  const { db, transport, logger } = options;
  const production = options.production ?? process.env.NODE_ENV === 'production';
  // Keep idle connections longer than any client we expect (the gateway keeps them 30 s), so the
  // client always closes first: a server closing a connection a client has just written a
  // request on makes that request fail with ECONNRESET (Node's default is 5 s, which a busy
  // gateway's event loop can overrun). Headers must be given longer than that.
  const http: Server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000 });
  const apollo = subgraphApollo(options, http, production);
  await apollo.start();
  if (options.closeTransport !== false) await transport.start();
  await options.relay?.start();
  for (const consumer of options.consumers ?? []) await consumer.start();

  http.on(
    'request',
    createHttpHandler({
      service: options.name,
      apollo,
      logger,
      maxBodyBytes: options.maxBodyBytes ?? 2 * 1024 * 1024,
      context: (req) => options.context({ req, db }),
      ...(options.routes ? { extraRoutes: options.routes } : {}),
      ready: async () => {
        const database = await db.ping();
        const broker = transport.isReady();
        return { ok: database && broker, details: { database, broker } };
      },
    }),
  );
  return runningSubgraph(options, http, apollo);
}

/** The started subgraph: listens when asked, and stops its parts in order. */
function runningSubgraph<TContext extends BaseContext>(options: SubgraphOptions<TContext>, http: Server, apollo: ApolloServer<TContext>): Subgraph {
  const { db, transport, logger } = options;
  let url = '';
  let stopped = false;
  return {
    name: options.name,
    get url() {
      return url;
    },
    listen: async (port = 0, host = '127.0.0.1') => {
      await new Promise<void>((resolve, reject) => {
        http.once('error', reject);
        http.listen({ port, host, backlog: LISTEN_BACKLOG }, () => resolve());
      });
      const address = http.address() as AddressInfo;
      url = `http://${host}:${address.port}/graphql`;
      logger.info({ url }, `${options.name} subgraph listening`);
      return url;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // Order matters: no new events in, in-flight handlers finish (their events hit the
      // outbox), the relay publishes what is committed, then connections close.
      for (const consumer of options.consumers ?? []) await consumer.stop();
      await apollo.stop();
      if (options.relay) {
        await options.relay.stop();
        await options.relay.flush().catch((error) => logger.warn({ err: errorMessage(error) }, 'relay flush at shutdown failed; rows stay for the next start'));
      }
      if (options.closeTransport !== false) await transport.close();
      await db.close();
    },
  };
}
