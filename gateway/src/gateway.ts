import { ApolloGateway, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { Supergraph } from '@apollo/federation-internals';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginLandingPageDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { createLogger, currentContext, signIdentity, traceparentOf, type Logger } from '@tributary/core';
import { createTransport, type Transport } from '@tributary/core/events';
import { createHttpHandler, HttpRequestError, LISTEN_BACKLOG, retryAfterPlugin, type ExtraRoutes } from '@tributary/core/server';
import { ConfigError } from '@tributary/core/config';
import { initTracing } from '@tributary/core/tracing';
import { GraphQLError, type ExecutionArgs, type ExecutionResult, type GraphQLSchema } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { loadGatewayConfig, subgraphUrlOverrides, supergraphSubgraphNames, supergraphSubgraphUrls, type GatewayConfig } from './config.ts';
import { FileUploads } from './uploads.ts';
import { bearerToken, createAuthenticator, type Principal } from './auth.ts';
import { FastDataSource } from './datasource.ts';
import type { GatewayContext } from './context.ts';
import { formatError } from './errors.ts';
import { limitRules, unknownOperation } from './limits.ts';
import { createRateLimiter } from './rate-limit.ts';
import { unknownMutationFields, uploadLimitPlugin } from './upload-limit.ts';
import { EventHub, type HubBindings } from './event-hub.ts';
import { EntityCache, entityKeys, invalidationRules } from './cache/index.ts';
import { EventSubscriptions } from './subscriptions.ts';
import { BindingError, checkBindings, eventTypeOf, readBindings, type Bindings, type Path } from '@tributary/core/bindings';
import { createUi } from './ui/server.ts';
import { idempotencyKeyPlugin, multipartIdempotencyKey } from './idempotency.ts';

/**
 * Forwards the caller's identity, signed (with a mutation's Idempotency-Key, if any), and the trace to every subgraph request; sends them
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
  /** A token GraphiQL pre-fills; development only (ignored with NODE_ENV=production). */
  devToken?: string;
  /** The query GraphiQL opens with (default: a generic one that fits any schema). */
  graphiqlQuery?: string;
  /**
   * HTTP routes of the embedder's own on the gateway's server (e.g. a development page), tried
   * after the gateway's (/graphql, /health, /ready, /metrics, files, GraphiQL's /ui/) and before
   * a 404: return true for a request they answer. The pages can share GraphiQL's bundling,
   * headers and token through `@tributary/gateway/ui`.
   */
  routes?: ExtraRoutes;
}

export interface RunningGateway {
  url: string;
  /** `ws://…/graphql` */
  wsUrl: string;
  hub: EventHub;
  /** The result cache, when GATEWAY_CACHE_TYPES names any type. */
  cache: EntityCache | undefined;
  /**
   * Read SUPERGRAPH_PATH again and serve it: queries, subscriptions, queue bindings and cache
   * rules all follow it (main.ts calls it on SIGHUP). Rejects, keeping the old one, when the
   * file cannot be read or its event bindings are broken.
   */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

export const defaultSupergraphPath = fileURLToPath(new URL('../../schema/supergraph.graphql', import.meta.url));

/**
 * What the gateway needs from a supergraph's event bindings: the subscriptions, what its queue
 * binds, and the cache's rules.
 * @throws BindingError when a binding is broken (the directives, or what they name in `apiSchema`)
 */
function derive(sdl: string, apiSchema: GraphQLSchema | undefined): Bindings {
  const { bindings, problems } = readBindings(sdl);
  if (apiSchema && problems.length === 0) problems.push(...checkBindings(bindings, apiSchema, entityKeys(sdl)));
  if (problems.length > 0) throw new BindingError(problems);
  return bindings;
}

function hubBindings(bindings: Bindings, cache: EntityCache | undefined): HubBindings {
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

const wholeTypesOf = (bindings: Bindings) => [...new Set(bindings.changes.filter((c) => !c.key).map((c) => c.type))];

/**
 * The gateway: Apollo Gateway over the supergraph for queries and mutations, and graphql-ws on
 * the same path for the subscriptions the supergraph declares, fed by this instance's own queue.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<RunningGateway> {
  const config: GatewayConfig = loadGatewayConfig(options.env ?? process.env);
  const logger = options.logger ?? createLogger({ service: 'gateway', level: config.LOG_LEVEL });
  const supergraphPath = config.SUPERGRAPH_PATH ?? defaultSupergraphPath;
  const supergraphSdl = readFileSync(supergraphPath, 'utf8');
  let overrides = subgraphUrlOverrides(config, supergraphSubgraphNames(supergraphSdl));
  const uploadsSubgraph = config.GATEWAY_UPLOADS_SUBGRAPH === 'none' ? undefined : config.GATEWAY_UPLOADS_SUBGRAPH;
  /** Where the uploads subgraph's GraphQL endpoint is in a supergraph (its files endpoints are beside it). */
  const uploadsUrl = (sdl: string, urls: Record<string, string>): string | undefined => (uploadsSubgraph ? (urls[uploadsSubgraph] ?? supergraphSubgraphUrls(sdl)[uploadsSubgraph]) : undefined);
  const explicitUploads = Boolean((options.env ?? process.env).GATEWAY_UPLOADS_SUBGRAPH);
  const explicitRateLimitFields = Boolean((options.env ?? process.env).UPLOAD_RATE_LIMIT_FIELDS);
  /** The fields UPLOAD_RATE_LIMIT_FIELDS, set by hand, names and `schema` has no mutation field of (the default is not checked). */
  const unlimitedFields = (schema: GraphQLSchema) => (explicitRateLimitFields ? unknownMutationFields(schema, config.UPLOAD_RATE_LIMIT_FIELDS) : []);
  if (uploadsSubgraph && explicitUploads && !supergraphSubgraphNames(supergraphSdl).includes(uploadsSubgraph)) {
    throw new ConfigError([{ key: 'GATEWAY_UPLOADS_SUBGRAPH', message: `the supergraph has no subgraph named "${uploadsSubgraph}"` }]);
  }
  const uploads = new FileUploads({
    secret: config.INTERNAL_SIGNING_SECRET,
    logger,
    maxFieldBytes: config.GATEWAY_MAX_BODY_BYTES,
    maxFiles: config.GATEWAY_MAX_FILES,
    maxFileBytes: config.GATEWAY_MAX_FILE_BYTES,
  });
  uploads.setTarget(uploadsUrl(supergraphSdl, overrides));
  // The directives are checked before anything starts; what they name, once Apollo has built the API schema.
  const initial = derive(supergraphSdl, undefined);
  const cache =
    config.GATEWAY_CACHE_TYPES.length > 0
      ? new EntityCache({
          types: config.GATEWAY_CACHE_TYPES,
          rules: invalidationRules(initial.changes),
          wholeTypes: wholeTypesOf(initial),
          supergraphSdl,
          ttlMs: config.GATEWAY_CACHE_TTL_MS,
          maxEntries: config.GATEWAY_CACHE_MAX_ENTRIES,
          logger,
        })
      : undefined;
  const dataSources: IdentityDataSource[] = [];
  let updateSupergraph: ((sdl: string) => void) | undefined;
  const gateway = new ApolloGateway({
    supergraphSdl: async ({ update }) => {
      updateSupergraph = update;
      return { supergraphSdl };
    },
    buildService: ({ name, url }) => {
      const source = new IdentityDataSource({ url: overrides[name] ?? url ?? '' }, config.INTERNAL_SIGNING_SECRET);
      dataSources.push(source);
      return source;
    },
    logger: { debug: () => {}, info: (m) => logger.info(String(m)), warn: (m) => logger.warn(String(m)), error: (m) => logger.error(String(m)) },
  });
  let apiSchema: GraphQLSchema | undefined;
  /** Set on a reload: what its new supergraph's bindings did (applied, or why not). */
  let applied: Promise<void> = Promise.resolve();
  let onLoaded: ((sdl: string, schema: GraphQLSchema) => Promise<void>) | undefined;
  gateway.onSchemaLoadOrUpdate(({ apiSchema: schema, coreSupergraphSdl }) => {
    apiSchema = schema;
    if (onLoaded) applied = onLoaded(coreSupergraphSdl, schema);
  });

  initTracing({ serviceName: 'gateway', endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
  const authenticator = await createAuthenticator(config);
  const production = config.NODE_ENV === 'production';
  const http = createServer();
  const rateLimiter = await createRateLimiter(config, logger);
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
      idempotencyKeyPlugin,
      uploadLimitPlugin(config, rateLimiter, logger),
      ...(cache ? [cache.plugin()] : []),
      // SERVICE_UNAVAILABLE, ours or a subgraph's: HTTP 503 with Retry-After.
      retryAfterPlugin,
    ],
  });
  await apollo.start();
  let bindings: Bindings;
  try {
    const unknown = apiSchema ? unlimitedFields(apiSchema) : [];
    if (unknown.length > 0) throw new ConfigError([{ key: 'UPLOAD_RATE_LIMIT_FIELDS', message: `the API schema has no mutation field ${unknown.map((f) => `"${f}"`).join(', ')}` }]);
    bindings = derive(supergraphSdl, apiSchema);
  } catch (error) {
    await apollo.stop();
    await rateLimiter.close();
    throw error;
  }

  const ownTransport = !options.transport;
  const transport = options.transport ?? createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.gateway.${process.pid}`);
  if (ownTransport) await transport.start();
  const hub = new EventHub(
    transport,
    logger,
    cache
      ? {
          onEvent: (event) => cache.onEvent(event),
          // While the queue was gone, invalidating events went nowhere: nothing cached is sure.
          onResubscribed: () => {
            logger.warn({ entries: cache.size }, 'event queue re-created; dropping every cached result');
            cache.clear();
          },
        }
      : {},
  );
  await hub.bind(hubBindings(bindings, cache));

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
  const subscriptions = new EventSubscriptions({ hub, execute, logger });
  subscriptions.use(bindings.subscriptions);
  // A new supergraph (reload): its bindings replace the old ones only if they all hold.
  onLoaded = async (sdl, schema) => {
    const next = derive(sdl, schema);
    // Checked at start, only warned of here: a reload must not take a running gateway down.
    const unlimited = unlimitedFields(schema);
    if (unlimited.length > 0) logger.warn({ fields: unlimited }, 'the reloaded supergraph has no mutation field UPLOAD_RATE_LIMIT_FIELDS names; the upload rate limit counts the others');
    cache?.update({ rules: invalidationRules(next.changes), wholeTypes: wholeTypesOf(next), supergraphSdl: sdl });
    // Bound first: a stream that starts on the new bindings hears its events from the start.
    await hub.bind(hubBindings(next, cache));
    subscriptions.use(next.subscriptions);
    logger.info({ subscriptions: next.subscriptions.length, changes: next.changes.length }, 'supergraph reloaded');
  };

  const ui = createUi({ logger, production, devToken: options.devToken, defaultQuery: options.graphiqlQuery });
  const authenticate = async (req: IncomingMessage) => contextFor(await authenticator.verify(bearerToken(req.headers.authorization)));
  const handle = createHttpHandler({
    service: 'gateway',
    apollo,
    logger,
    maxBodyBytes: config.GATEWAY_MAX_BODY_BYTES,
    context: authenticate,
    multipart: async (req) => {
      if (!uploads.enabled) {
        req.resume();
        throw new HttpRequestError(400, 'BAD_REQUEST', 'this gateway takes no file uploads (GATEWAY_UPLOADS_SUBGRAPH)');
      }
      let identity: GatewayContext;
      try {
        identity = await authenticate(req);
      } catch (error) {
        req.resume();
        throw new HttpRequestError(401, 'UNAUTHENTICATED', error instanceof Error ? error.message : 'unauthenticated');
      }
      let key: string | undefined;
      try {
        key = multipartIdempotencyKey(req.headers);
      } catch (error) {
        req.resume();
        throw error;
      }
      // The files are staged with the key too (signed with the identity); the mutation gets it from the plugin.
      return uploads.readMultipart(req, key !== undefined ? { ...identity, idempotencyKey: key } : identity);
    },
    cors: config.CORS_ORIGINS,
    ready: async () => {
      const broker = transport.isReady();
      const schema = apiSchema !== undefined;
      return { ok: broker && schema, details: { broker, schema } };
    },
    extraRoutes: (req, res, url) => uploads.route(req, res, url, authenticate) || ui.routes(req, res, url) || (options.routes?.(req, res, url) ?? false),
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
    reload: async () => {
      const sdl = readFileSync(supergraphPath, 'utf8');
      // All checked before Apollo takes it: once it has, the schema it serves has changed.
      const next = derive(sdl, Supergraph.build(sdl).apiSchema().toGraphQLJSSchema());
      cache?.verify({ rules: invalidationRules(next.changes), wholeTypes: wholeTypesOf(next), supergraphSdl: sdl });
      const nextOverrides = subgraphUrlOverrides(config, supergraphSubgraphNames(sdl));
      if (!updateSupergraph) throw new Error('the gateway has not loaded a supergraph yet');
      overrides = nextOverrides;
      uploads.setTarget(uploadsUrl(sdl, overrides));
      updateSupergraph(sdl);
      await applied;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await hub.stop();
      await wsServer.dispose();
      wss.close();
      await apollo.stop();
      await Promise.all(dataSources.map((source) => source.close()));
      await uploads.close();
      if (ownTransport) await transport.close();
      await rateLimiter.close();
    },
  };
}
