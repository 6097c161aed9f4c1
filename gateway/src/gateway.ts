import { ApolloGateway, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { createLogger, currentContext, signIdentity, traceparentOf, type Logger } from '@tributary/core';
import { createTransport, type Transport } from '@tributary/core/events';
import { createHttpHandler, LISTEN_BACKLOG } from '@tributary/core/server';
import { initTracing } from '@tributary/core/tracing';
import { GraphQLError, type ExecutionArgs, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { loadGatewayConfig, subgraphUrlOverrides, type GatewayConfig } from './config.ts';
import { bearerToken, createAuthenticator, type Principal } from './auth.ts';
import { FastDataSource } from './datasource.ts';
import type { GatewayContext } from './context.ts';
import { formatError, limitRules, RateLimiter, unknownOperation, uploadRateLimit } from './limits.ts';
import { JobEventHub } from './job-events.ts';
import { EntityCache, type InvalidationRules } from './cache.ts';
import { productRules } from './cache-rules.ts';
import { JobSubscriptions } from './subscriptions.ts';
import { createUi } from './ui/server.ts';

/**
 * Forwards the caller's identity, signed, and the trace to every subgraph request; sends them
 * over keep-alive undici pools with de-duplicated entity representations (FastDataSource).
 */
class IdentityDataSource extends FastDataSource<GatewayContext> {
  constructor(
    options: { url: string },
    private readonly secret: string,
  ) {
    super(options);
  }

  override willSendRequest({ request, context }: GraphQLDataSourceProcessOptions<GatewayContext>): void {
    const headers = request.http?.headers;
    // Requests the gateway makes on its own (no caller) carry no identity: subgraphs refuse them.
    if (!headers || !('tenantId' in context)) return;
    const identity = context as GatewayContext;
    for (const [name, value] of Object.entries(signIdentity(this.secret, identity))) headers.set(name, value);
    if (identity.traceparent) headers.set('traceparent', identity.traceparent);
  }
}

export interface GatewayOptions {
  env?: Record<string, string | undefined>;
  /** A transport shared with the subgraphs of the same process (embedded mode). */
  transport?: Transport;
  logger?: Logger;
  port?: number;
  host?: string;
  /** A token the demo page and GraphiQL pre-fill; development only (ignored with NODE_ENV=production). */
  devToken?: string;
  /** How events invalidate the cache (GATEWAY_CACHE_TYPES); default: Tributary's own events. */
  cacheRules?: InvalidationRules;
}

export interface RunningGateway {
  url: string;
  /** `ws://…/graphql` */
  wsUrl: string;
  hub: JobEventHub;
  /** The result cache, when GATEWAY_CACHE_TYPES names any type. */
  cache: EntityCache | undefined;
  stop(): Promise<void>;
}

export const defaultSupergraphPath = fileURLToPath(new URL('../../schema/supergraph.graphql', import.meta.url));

/**
 * The gateway: Apollo Gateway over the committed supergraph for queries and mutations, and
 * graphql-ws on the same path for subscriptions, fed by this instance's own `job.updated` queue.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<RunningGateway> {
  const config: GatewayConfig = loadGatewayConfig(options.env ?? process.env);
  const logger = options.logger ?? createLogger({ service: 'gateway', level: config.LOG_LEVEL });
  const overrides = subgraphUrlOverrides(config);
  const supergraphSdl = readFileSync(config.SUPERGRAPH_PATH ?? defaultSupergraphPath, 'utf8');
  const cache =
    config.GATEWAY_CACHE_TYPES.length > 0
      ? new EntityCache({ types: config.GATEWAY_CACHE_TYPES, rules: options.cacheRules ?? productRules, supergraphSdl, ttlMs: config.GATEWAY_CACHE_TTL_MS, maxEntries: config.GATEWAY_CACHE_MAX_ENTRIES, logger })
      : undefined;
  const dataSources: IdentityDataSource[] = [];
  const gateway = new ApolloGateway({
    supergraphSdl,
    buildService: ({ name, url }) => {
      const source = new IdentityDataSource({ url: overrides[name] ?? url ?? '' }, config.INTERNAL_SIGNING_SECRET);
      dataSources.push(source);
      return source;
    },
    logger: { debug: () => {}, info: (m) => logger.info(String(m)), warn: (m) => logger.warn(String(m)), error: (m) => logger.error(String(m)) },
  });
  let apiSchema: GraphQLSchema | undefined;
  gateway.onSchemaLoadOrUpdate(({ apiSchema: schema }) => {
    apiSchema = schema;
  });

  initTracing({ serviceName: 'gateway', endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
  const authenticator = await createAuthenticator(config);
  const production = config.NODE_ENV === 'production';
  const http = createServer();
  const apollo = new ApolloServer<GatewayContext>({
    gateway,
    // We own shutdown (see main.ts); Apollo's own signal handlers would race it.
    stopOnTerminationSignals: false,
    introspection: !production,
    includeStacktraceInErrorResponses: !production,
    validationRules: limitRules(config),
    formatError: formatError(production),
    // GraphiQL (bundled, ./ui) replaces Apollo's landing page, which loads from a CDN.
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer: http }),
      ApolloServerPluginLandingPageDisabled(),
      unknownOperation,
      uploadRateLimit(new RateLimiter(config.UPLOAD_RATE_LIMIT_PER_MINUTE)),
      ...(cache ? [cache.plugin()] : []),
    ],
  });
  await apollo.start();

  const ownTransport = !options.transport;
  const transport = options.transport ?? createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.gateway.${process.pid}`);
  if (ownTransport) await transport.start();
  const hub = new JobEventHub(
    transport,
    logger,
    cache
      ? {
          bindings: cache.eventTypes,
          onEvent: (event) => cache.onEvent(event),
          // While the queue was gone, invalidating events went nowhere: nothing cached is sure.
          onResubscribed: () => {
            logger.warn({ entries: cache.size }, 'event queue re-created; dropping every cached result');
            cache.clear();
          },
        }
      : {},
  );
  await hub.start();

  const contextFor = (principal: Principal): GatewayContext => {
    const trace = currentContext();
    if (trace) trace.tenantId = principal.tenantId;
    return { tenantId: principal.tenantId, userId: principal.userId, ...(trace ? { traceparent: traceparentOf(trace) } : {}) };
  };
  const execute = async (query: ExecutionArgs['document'], variables: Record<string, unknown> | undefined, contextValue: GatewayContext): Promise<ExecutionResult> => {
    const response = await apollo.executeOperation({ query, ...(variables ? { variables } : {}) }, { contextValue });
    if (response.body.kind !== 'single') throw new Error('incremental delivery is not supported over graphql-ws');
    const { errors, ...rest } = response.body.singleResult;
    // executeOperation hands back formatted (plain) errors; graphql-ws serialises GraphQLErrors.
    if (!errors?.length) return rest as ExecutionResult;
    return { ...rest, errors: errors.map((e) => new GraphQLError(e.message, { ...(e.path ? { path: e.path } : {}), ...(e.extensions ? { extensions: e.extensions } : {}) })) } as ExecutionResult;
  };
  const subscriptions = new JobSubscriptions({ hub, execute, logger });

  const ui = createUi({ logger, production, devToken: options.devToken });
  const handle = createHttpHandler({
    service: 'gateway',
    apollo,
    logger,
    maxBodyBytes: config.GATEWAY_MAX_BODY_BYTES,
    context: async (req: IncomingMessage) => contextFor(await authenticator.verify(bearerToken(req.headers.authorization))),
    cors: config.CORS_ORIGINS,
    ready: async () => {
      const broker = transport.isReady();
      const schema = apiSchema !== undefined;
      return { ok: broker && schema, details: { broker, schema } };
    },
    extraRoutes: ui.routes,
  });
  http.on('request', (req, res) => ui.graphiql(req, res) || handle(req, res));

  const wss = new WebSocketServer({ server: http, path: '/graphql' });
  const wsServer = useServer<Record<string, unknown> | undefined, { principal?: Principal; expiry?: NodeJS.Timeout }>(
    {
      schema: () => {
        if (!apiSchema) throw new Error('the supergraph is not loaded');
        return apiSchema;
      },
      // Authenticate once, in connection_init: returning false closes with 4403 Forbidden.
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const token = bearerToken(params.authorization ?? params.Authorization) ?? (typeof params.token === 'string' ? params.token : null) ?? bearerToken(ctx.extra.request.headers.authorization);
        try {
          const principal = await authenticator.verify(token);
          ctx.extra.principal = principal;
          if (principal.expiresAt !== null) {
            // An expired token ends the connection, and with it every subscription on it.
            const socket = ctx.extra.socket;
            ctx.extra.expiry = setTimeout(() => socket.close(4403, 'Forbidden: token expired'), Math.max(0, principal.expiresAt - Date.now()));
            ctx.extra.expiry.unref();
          }
          return true;
        } catch {
          return false;
        }
      },
      onClose: (ctx) => clearTimeout(ctx.extra.expiry),
      context: (ctx) => contextFor(ctx.extra.principal!),
      subscribe: (args) => subscriptions.subscribe(args),
      execute: (args) => execute(args.document, (args.variableValues ?? undefined) as Record<string, unknown> | undefined, args.contextValue as GatewayContext),
    },
    wss,
  );

  const host = options.host ?? config.HOST;
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen({ port: options.port ?? config.PORT, host, backlog: LISTEN_BACKLOG }, () => resolve());
  });
  const { port } = http.address() as AddressInfo;
  const url = `http://${host}:${port}/graphql`;
  logger.info({ url }, 'gateway listening');

  let stopped = false;
  return {
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    hub,
    cache,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await hub.stop();
      await wsServer.dispose();
      wss.close();
      await apollo.stop();
      await Promise.all(dataSources.map((source) => source.close()));
      if (ownTransport) await transport.close();
    },
  };
}
