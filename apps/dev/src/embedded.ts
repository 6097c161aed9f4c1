import { createAnalysisService, type AnalysisServiceOptions } from '@tributary/analysis';
import { baseConfigSchema, ConfigError, createLogger, eventBusUrl, loadConfig, type BaseConfig } from '@tributary/core';
import { databaseTarget, openDatabase, type Database } from '@tributary/core/db';
import { eventLogMigrations, InMemoryTransport, SqlEventLog, type Transport } from '@tributary/core/events';
import { startService, type RunningService, type ServiceDefinition, type SubgraphConfig } from '@tributary/core/service';
import { signToken, startGateway, type RunningGateway } from '@tributary/gateway';
import { loadSubgraphServices } from '@tributary/schema/subgraphs';
import { randomBytes } from 'node:crypto';
import { createDemo } from './demo/server.ts';
import { gatewaySubgraphUrls } from './urls.ts';

/** The query `pnpm dev`'s GraphiQL opens with: a look at the tenant's aggregates. */
export const GRAPHIQL_QUERY = `# Tributary's GraphQL API: Ctrl-Enter runs it.
# Headers carry the token:
#   {"authorization": "Bearer <token>"}
# Subscriptions go over graphql-ws with
# the same header as connectionParams.

query Overview {
  stats { documents analyzed failed }
  themes(first: 5) {
    name
    documentCount
    averageScore
  }
}
`;

/** A random secret, as the gateway's own development secrets are made. */
const generateSecret = () => randomBytes(48).toString('base64url');

export interface EmbeddedOptions {
  env?: Record<string, string | undefined>;
  /** Gateway port (default 4000; 0 picks a free one). Subgraphs take free ports. */
  port?: number;
  /** The analysis subgraph made with these options instead of the package's own definition. */
  analysis?: AnalysisServiceOptions;
}

export interface EmbeddedSystem {
  gateway: RunningGateway;
  services: RunningService[];
  /** The HS256 secret tokens are verified with, when authentication is by shared secret. */
  authSecret: string | undefined;
  /** A token for tenant `dev`, user `developer` (valid 12 h), when `authSecret` is known. */
  devToken: string | undefined;
  stop(): Promise<void>;
}

/** The in-memory bus of embedded mode with its log, and what closes both. */
export interface EmbeddedTransport {
  transport: Transport;
  close(): Promise<void>;
}

/**
 * The in-memory bus that every service of the process shares, with the event log in a table of
 * an embedded database of its own (`events`: PGlite under TRIBUTARY_DATA_DIR, or
 * `tributary_events` on DATABASE_URL's server when set), unless EVENT_LOG=off.
 */
export async function createEmbeddedTransport(config: BaseConfig, env: Record<string, string | undefined>): Promise<EmbeddedTransport> {
  let db: Database | undefined;
  let log: SqlEventLog | undefined;
  if (config.EVENT_LOG === 'on') {
    const logger = createLogger({ service: 'events', level: config.LOG_LEVEL });
    db = await openDatabase({ service: 'events', target: databaseTarget('events', env), entities: [], migrations: eventLogMigrations, logger });
    log = new SqlEventLog(db, { ...config.EVENT_LOG_RETENTION, logger });
  }
  const transport = new InMemoryTransport(config.TRIBUTARY_NAMESPACE, log);
  await transport.start();
  return {
    transport,
    close: async () => {
      await transport.close();
      log?.close();
      await db?.close();
    },
  };
}

/**
 * The gateway, every subgraph of the workspace (`loadSubgraphServices`, in name order) and their
 * consumers in one process: what `pnpm dev` runs, with the
 * demo page on the gateway's `/` (./demo) and GraphiQL opening on {@link GRAPHIQL_QUERY}.
 * Without EVENT_BUS_URL (or AMQP_URL) they share one in-memory bus ({@link createEmbeddedTransport}, its log in
 * the `events` database); without DATABASE_URL each has its own PGlite
 * under TRIBUTARY_DATA_DIR. With both set, the same code runs on real services.
 */
export async function startEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedSystem> {
  const given = options.env ?? process.env;
  // One process: the internal secret only has to be shared with ourselves; and a development
  // setup without authentication gets a fresh secret and a token to use (printed by pnpm dev).
  const env = { ...given };
  env.INTERNAL_SIGNING_SECRET ||= generateSecret();
  if (!env.AUTH_JWT_SECRET && !env.AUTH_JWKS_URL && !env.AUTH_PUBLIC_KEY) {
    if (given.NODE_ENV === 'production') throw new ConfigError([{ key: 'AUTH_JWT_SECRET', message: 'no authentication configured: set AUTH_JWT_SECRET, AUTH_JWKS_URL or AUTH_PUBLIC_KEY' }]);
    env.AUTH_JWT_SECRET = generateSecret();
  }
  const config = loadConfig(baseConfigSchema, env);
  const bus = eventBusUrl(config) ? undefined : await createEmbeddedTransport(config, env);
  const shared = bus?.transport;
  const services: RunningService[] = [];
  const start = async <C extends SubgraphConfig>(definition: ServiceDefinition<C>) => {
    services.push(await startService(definition, { env, port: 0, ...(shared ? { transport: shared } : {}) }));
  };
  try {
    for (const definition of await loadSubgraphServices()) {
      await (definition.name === 'analysis' && options.analysis ? start(createAnalysisService(options.analysis)) : start(definition));
    }
    const urls = gatewaySubgraphUrls(Object.fromEntries(services.map((s) => [s.name, s.url])), env.SUBGRAPH_URLS);
    const authSecret = env.AUTH_JWT_SECRET;
    const devToken = authSecret
      ? await signToken(authSecret, { sub: 'developer', tenant: 'dev', ...(env.AUTH_ISSUER ? { issuer: env.AUTH_ISSUER } : {}), ...(env.AUTH_AUDIENCE ? { audience: env.AUTH_AUDIENCE } : {}) })
      : undefined;
    const production = config.NODE_ENV === 'production';
    // The demo page and GraphiQL pre-fill the token; both drop it in production.
    const demo = createDemo({ logger: createLogger({ service: 'embedded', level: config.LOG_LEVEL }), production, devToken });
    const gateway = await startGateway({
      env: { ...env, ...urls },
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(shared ? { transport: shared } : {}),
      ...(devToken ? { devToken } : {}),
      graphiqlQuery: GRAPHIQL_QUERY,
      routes: demo.routes,
    });
    return {
      gateway,
      services,
      authSecret,
      devToken,
      stop: async () => {
        await gateway.stop();
        for (const service of services.reverse()) await service.stop();
        await bus?.close();
      },
    };
  } catch (error) {
    for (const service of services.reverse()) await service.stop().catch(() => {});
    await bus?.close();
    throw error;
  }
}
