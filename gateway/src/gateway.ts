import { Supergraph } from '@apollo/federation-internals';
import type { ApolloServer } from '@apollo/server';
import { createLogger, type Logger } from '@tributary/core';
import type { Bindings } from '@tributary/core/bindings';
import { createTransport, type Transport } from '@tributary/core/events';
import { watchEventLog } from '@tributary/core/metrics';
import { LISTEN_BACKLOG, type ExtraRoutes } from '@tributary/core/server';
import type { RateLimiter } from '@tributary/core/rate-limit';
import { initTracing } from '@tributary/core/tracing';
import type { GraphQLSchema } from 'graphql';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApollo, executorOf } from './apollo.ts';
import { bearerToken, createAuthenticator, type Authenticator } from './auth.ts';
import { EntityCache } from './cache/index.ts';
import { loadGatewayConfig, type GatewayConfig } from './config.ts';
import { contextFor, type GatewayContext } from './context.ts';
import { EventHub, type EventHubOptions } from './event-hub.ts';
import { Federation } from './federation.ts';
import { gatewayHttpHandler } from './http.ts';
import { createRateLimiter } from './rate-limit.ts';
import { EventSubscriptions, type QueryExecutor } from './subscriptions.ts';
import { cacheInput, checkUploadsSubgraph, eventBindings, hubBindings, readSupergraph, subgraphRouting } from './supergraph.ts';
import { createUi } from './ui/server.ts';
import { checkUploadLimitFields, unlimitedFields } from './upload-limit.ts';
import { FileUploads } from './uploads.ts';
import { serveWebSockets } from './websocket.ts';

export { defaultSupergraphPath } from './supergraph.ts';

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

/**
 * The gateway: Apollo Gateway over the supergraph for queries and mutations, and graphql-ws on
 * the same path for the subscriptions the supergraph declares, fed by this instance's own queue.
 * The settings are read and checked once, here; everything after works from the validated ones.
 */
export async function startGateway(options: GatewayOptions = {}): Promise<RunningGateway> {
  return Gateway.start(loadGatewayConfig(options.env ?? process.env), options);
}

/** What a started gateway holds, besides its settings: what a reload changes and what stop closes. */
interface Parts {
  logger: Logger;
  federation: Federation;
  apollo: ApolloServer<GatewayContext>;
  uploads: FileUploads;
  cache: EntityCache | undefined;
  hub: EventHub;
  subscriptions: EventSubscriptions;
  /** Runs an operation through Apollo (the subscriptions' reads, graphql-ws' queries). */
  execute: QueryExecutor;
  transport: Transport;
  /** Whether the transport is the gateway's own (else the embedder's, who closes it). */
  ownTransport: boolean;
  rateLimiter: RateLimiter;
  http: Server;
}

class Gateway implements RunningGateway {
  readonly hub: EventHub;
  readonly cache: EntityCache | undefined;
  readonly wsUrl: string;
  private stopped = false;

  private constructor(
    private readonly config: GatewayConfig,
    private readonly parts: Parts,
    readonly url: string,
    private readonly websockets: { close(): Promise<void> },
  ) {
    this.hub = parts.hub;
    this.cache = parts.cache;
    this.wsUrl = url.replace(/^http/, 'ws');
    // Every supergraph Apollo takes after the first is a reload's.
    parts.federation.reloadWith((sdl, schema) => this.apply(sdl, schema));
  }

  /**
   * Start a gateway with validated settings: the supergraph and its bindings checked, Apollo
   * started, the queue bound, then the server listening.
   * @throws ConfigError, BindingError when the settings and the supergraph do not fit together
   */
  static async start(config: GatewayConfig, options: GatewayOptions): Promise<Gateway> {
    const logger = options.logger ?? createLogger({ service: 'gateway', level: config.LOG_LEVEL });
    const sdl = readSupergraph(config);
    const routing = subgraphRouting(config, sdl);
    checkUploadsSubgraph(config, sdl);
    const uploads = new FileUploads({
      secret: config.INTERNAL_SIGNING_SECRET,
      logger,
      maxFieldBytes: config.GATEWAY_MAX_BODY_BYTES,
      maxFiles: config.GATEWAY_MAX_FILES,
      maxFileBytes: config.GATEWAY_MAX_FILE_BYTES,
    });
    uploads.setTarget(routing.uploadsUrl);
    // The directives are checked before anything starts; what they name, once Apollo has built the API schema.
    const initial = eventBindings(sdl, undefined);
    const cache =
      config.GATEWAY_CACHE_TYPES.length > 0
        ? new EntityCache({ types: config.GATEWAY_CACHE_TYPES, ...cacheInput(initial, sdl), ttlMs: config.GATEWAY_CACHE_TTL_MS, maxEntries: config.GATEWAY_CACHE_MAX_ENTRIES, logger })
        : undefined;
    const federation = new Federation({ sdl, overrides: routing.overrides, secret: config.INTERNAL_SIGNING_SECRET, executor: config.GATEWAY_EXECUTOR, logger });
    initTracing({ serviceName: 'gateway', endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
    const authenticator = await createAuthenticator(config);
    const http = createServer();
    const rateLimiter = await createRateLimiter(config, logger);
    const apollo = createApollo({ config, federation, http, rateLimiter, cache, logger });
    await apollo.start();
    let bindings: Bindings;
    try {
      checkUploadLimitFields(config, federation.apiSchema);
      bindings = eventBindings(sdl, federation.apiSchema);
    } catch (error) {
      await apollo.stop();
      await rateLimiter.close();
      throw error;
    }
    const ownTransport = !options.transport;
    const transport = options.transport ?? createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.gateway.${process.pid}`);
    if (ownTransport) await transport.start();
    if (transport.log) watchEventLog(config.TRIBUTARY_NAMESPACE, transport.log);
    const hub = new EventHub(transport, logger, cache ? cacheListener(cache, logger) : {});
    await hub.bind(hubBindings(bindings, cache));
    const execute = executorOf(apollo);
    const subscriptions = new EventSubscriptions({ hub, execute, logger, maxQueued: config.SUBSCRIPTION_MAX_QUEUED });
    subscriptions.use(bindings.subscriptions);
    const parts: Parts = { logger, federation, apollo, uploads, cache, hub, subscriptions, execute, transport, ownTransport, rateLimiter, http };
    const { url, websockets } = await listen(config, parts, options, authenticator);
    return new Gateway(config, parts, url, websockets);
  }

  async reload(): Promise<void> {
    await this.serve(readSupergraph(this.config));
  }

  /**
   * The reload step: serve the supergraph `sdl` under the gateway's validated settings. All is
   * checked before Apollo takes it (once it has, the schema it serves has changed); Apollo then
   * builds its API schema and hands both to {@link apply}, whose outcome this resolves or rejects with.
   * @throws BindingError, ConfigError and then keeps serving the supergraph it has
   */
  private async serve(sdl: string): Promise<void> {
    const next = eventBindings(sdl, Supergraph.build(sdl).apiSchema().toGraphQLJSSchema());
    this.cache?.verify(cacheInput(next, sdl));
    const routing = subgraphRouting(this.config, sdl);
    const { federation, uploads } = this.parts;
    if (!federation.loaded) throw new Error('the gateway has not loaded a supergraph yet');
    uploads.setTarget(routing.uploadsUrl);
    await federation.replace(sdl, routing.overrides);
  }

  /**
   * What a reload's supergraph `sdl` changes once Apollo serves it (with the API schema Apollo
   * built of it): its bindings replace the old ones (the cache's rules, the queue's bindings, the subscriptions) only if
   * they all hold under the gateway's settings. Streams already open keep theirs.
   * @throws BindingError, ConfigError (the cache's types) and then changes nothing
   */
  private async apply(sdl: string, schema: GraphQLSchema): Promise<void> {
    const { logger, cache, hub, subscriptions } = this.parts;
    const next = eventBindings(sdl, schema);
    // Checked at start, only warned of here: a reload must not take a running gateway down.
    const unlimited = unlimitedFields(this.config, schema);
    if (unlimited.length > 0) logger.warn({ fields: unlimited }, 'the reloaded supergraph has no mutation field UPLOAD_RATE_LIMIT_FIELDS names; the upload rate limit counts the others');
    cache?.update(cacheInput(next, sdl));
    // Bound first: a stream that starts on the new bindings hears its events from the start.
    await hub.bind(hubBindings(next, cache));
    subscriptions.use(next.subscriptions);
    logger.info({ subscriptions: next.subscriptions.length, changes: next.changes.length }, 'supergraph reloaded');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const { hub, apollo, federation, uploads, transport, ownTransport, rateLimiter } = this.parts;
    await hub.stop();
    await this.websockets.close();
    await apollo.stop();
    await federation.close();
    await uploads.close();
    if (ownTransport) await transport.close();
    await rateLimiter.close();
  }
}

/** The cache's side of the event hub: invalidating events, and a re-created queue (events may have been missed). */
function cacheListener(cache: EntityCache, logger: Logger): EventHubOptions {
  return {
    onEvent: (event) => cache.onEvent(event),
    // While the queue was gone, invalidating events went nowhere: nothing cached is sure.
    onResubscribed: () => {
      logger.warn({ entries: cache.size }, 'event queue re-created; dropping every cached result');
      cache.clear();
    },
  };
}

/** Serve HTTP and graphql-ws on the gateway's server, and listen. */
async function listen(config: GatewayConfig, parts: Parts, options: GatewayOptions, authenticator: Authenticator): Promise<{ url: string; websockets: { close(): Promise<void> } }> {
  const { logger, federation, apollo, uploads, transport, subscriptions, execute, http } = parts;
  const production = config.NODE_ENV === 'production';
  const ui = createUi({ logger, production, devToken: options.devToken, defaultQuery: options.graphiqlQuery });
  const authenticate = async (req: IncomingMessage) => contextFor(await authenticator.verify(bearerToken(req.headers.authorization)));
  const ready = () => ({ broker: transport.isReady(), schema: federation.apiSchema !== undefined });
  http.on('request', gatewayHttpHandler({ config, apollo, logger, authenticate, uploads, ui, ready, routes: options.routes }));
  const websockets = serveWebSockets(http, { schema: () => federation.apiSchema, authenticator, subscriptions, execute });

  const host = options.host ?? config.HOST;
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen({ port: options.port ?? config.PORT, host, backlog: LISTEN_BACKLOG }, () => resolve());
  });
  const { port } = http.address() as AddressInfo;
  const url = `http://${host}:${port}/graphql`;
  logger.info({ url }, 'gateway listening');
  return { url, websockets };
}
