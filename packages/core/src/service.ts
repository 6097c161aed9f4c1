import type { BaseContext } from '@apollo/server';
import type { EntitySchema, MigrationObject } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { DocumentNode } from 'graphql';
import { z } from 'zod';
import { baseConfigSchema, loadConfig } from './config.ts';
import { currentContext } from './context.ts';
import { databaseTarget, openDatabase, type Database } from './db/index.ts';
import { EventConsumer, type EventConsumerHandler, type EventConsumerSettings } from './events/consumer.ts';
import { createTransport } from './events/create.ts';
import { OutboxRelay } from './events/relay.ts';
import type { Transport } from './events/transport.ts';
import type { ResolverMap } from './graphql.ts';
import { createLogger, type Logger } from './log.ts';
import { createSubgraph, type ExtraRoutes, type Subgraph } from './server.ts';
import { watchEventLog, watchOutbox } from './metrics.ts';
import { initTracing } from './tracing.ts';
import { verifyIdentity, type Identity } from './identity.ts';
import type { ViewsDefinition } from './views/types.ts';
import { DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS } from './idempotency.ts';
import { retentionSettings, startPruning } from './retention.ts';

export type { Identity } from './identity.ts';

/** The context every subgraph resolver receives. */
export interface SubgraphContext extends BaseContext, Identity {
  /** A fresh EntityManager for this request. */
  em: EntityManager;
  db: Database;
  log: Logger;
}
/** Settings every subgraph service has on top of `baseConfigSchema`. */
export const subgraphConfigSchema = baseConfigSchema.extend({
  /**
   * Shared with the gateway: it signs the caller's identity on every subgraph request with it.
   * No default: a guessable value would let anyone who reaches a subgraph pick a tenant.
   */
  INTERNAL_SIGNING_SECRET: z.string().min(32, 'must be at least 32 characters (e.g. `openssl rand -base64 48`)'),
  /** PostgreSQL connections per service process. Default 10. */
  DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(200).default(10),
  /** How long a mutation's `Idempotency-Key` is kept, hours (1..720). Default 24. */
  IDEMPOTENCY_KEY_TTL_HOURS: z.coerce.number().int().min(1).max(720).default(DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS),
  ...retentionSettings,
});
export type SubgraphConfig = z.infer<typeof subgraphConfigSchema>;

/** What a service's consumers are built from. */
export interface ServiceDeps<C extends SubgraphConfig = SubgraphConfig> {
  db: Database;
  transport: Transport;
  logger: Logger;
  config: C;
  /** The environment the config was read from, for settings named at run time (e.g. `AI_<NAME>_MODEL`). */
  env: Readonly<Record<string, string | undefined>>;
  /** The service's workers ({@link ServiceDefinition.workers}), for its consumers and resolvers; empty while they are built. */
  workers: readonly ServiceWorker[];
}

/** A consumer as a service defines it: its options but what the service supplies, with exactly one handler. */
export type ConsumerDefinition = Omit<EventConsumerSettings, 'db' | 'transport' | 'logger' | 'service'> & EventConsumerHandler;

/** Background work a service runs beside its consumers (the analysis scheduler's call slots). */
export interface ServiceWorker {
  /** Begin; resolves once running. */
  start(): Promise<void>;
  /** Take no new work, finish what is in flight. */
  stop(): Promise<void>;
}

/** Everything that makes one subgraph service; each subgraph package exports one. */
export interface ServiceDefinition<C extends SubgraphConfig = SubgraphConfig> {
  name: string;
  typeDefs: DocumentNode;
  resolvers: ResolverMap<SubgraphContext> | ((deps: ServiceDeps<C>) => ResolverMap<SubgraphContext>);
  entities: EntitySchema<any, any>[];
  migrations: MigrationObject[];
  /** The service's config schema (extends `subgraphConfigSchema`). */
  configSchema?: z.ZodType<C>;
  consumers?: (deps: ServiceDeps<C>) => ConsumerDefinition[];
  /**
   * Background workers, started once the server listens and stopped before it: their effects
   * go out through the outbox, whose relay stops after them. Built before the consumers and
   * the resolvers, which may use them (`deps.workers`).
   */
  workers?: (deps: ServiceDeps<C>) => ServiceWorker[];
  /** Port when neither the caller nor `PORT` says otherwise. */
  defaultPort: number;
  /**
   * HTTP routes besides /graphql (e.g. a file upload endpoint). They verify the caller's
   * signed identity themselves (`verifyIdentity`).
   */
  routes?: (deps: ServiceDeps<C>) => ExtraRoutes;
  /** The tables that are pure projections of events and the consumers that fill them: what `pnpm views:rebuild` rebuilds. */
  views?: ViewsDefinition;
}

export interface StartOptions {
  env?: Record<string, string | undefined>;
  /** A transport shared by services in one process (embedded mode's in-memory bus). */
  transport?: Transport;
  port?: number;
  host?: string;
  logger?: Logger;
}

export interface RunningService {
  name: string;
  url: string;
  db: Database;
  transport: Transport;
  /** The service's event consumers, started (tests stop and restart one to build a backlog). */
  consumers: readonly EventConsumer[];
  /** The service's background workers, started. */
  workers: readonly ServiceWorker[];
  stop(): Promise<void>;
}

/**
 * Start a subgraph service: config, logger, database (migrated), transport, outbox relay,
 * consumers and the HTTP server, wired in the right order and stopped in the reverse one.
 */
export async function startService<C extends SubgraphConfig>(definition: ServiceDefinition<C>, options: StartOptions = {}): Promise<RunningService> {
  const env = options.env ?? process.env;
  const config = loadConfig((definition.configSchema ?? subgraphConfigSchema) as z.ZodType<C>, env);
  const logger = options.logger ?? createLogger({ service: definition.name, level: config.LOG_LEVEL });
  const db = await openDatabase({
    service: definition.name,
    target: databaseTarget(definition.name, env),
    entities: definition.entities,
    migrations: definition.migrations,
    logger,
    poolSize: config.DATABASE_POOL_SIZE,
  });
  const sharedTransport = options.transport;
  const transport = sharedTransport ?? createTransport(config, logger, `${config.TRIBUTARY_NAMESPACE}.${definition.name}.${process.pid}`);
  const workers: ServiceWorker[] = [];
  const deps: ServiceDeps<C> = { db, transport, logger, config, env, workers };
  workers.push(...(definition.workers?.(deps) ?? []));
  initTracing({ serviceName: definition.name, endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
  // The relay's own connections: in the shared pool it would queue behind every request waiting
  // for one (a burst of uploads holds hundreds), and nothing would leave the outbox until they
  // had all committed. On PostgreSQL its batches open connections of their own; this pool only
  // prunes. PGlite is one session in this process: there it shares.
  const relayDb =
    db.target.kind === 'postgres'
      ? await openDatabase({ service: definition.name, target: db.target, entities: definition.entities, migrations: definition.migrations, logger, poolSize: 1 })
      : db;
  const relay = new OutboxRelay({ service: definition.name, db: relayDb, transport, logger, retainSentMs: config.OUTBOX_RETENTION_MINUTES * 60_000 });
  const unwatch = watchOutbox(definition.name, db);
  if (transport.log) watchEventLog(config.TRIBUTARY_NAMESPACE, transport.log);
  const consumers = (definition.consumers?.(deps) ?? []).map(
    (consumer) => new EventConsumer({ ...consumer, service: definition.name, db, transport, logger }),
  );
  const resolvers = typeof definition.resolvers === 'function' ? definition.resolvers(deps) : definition.resolvers;
  // A shared transport belongs to whoever created it; start() is idempotent for the in-memory bus.
  const subgraph: Subgraph = await createSubgraph<SubgraphContext>({
    name: definition.name,
    typeDefs: definition.typeDefs,
    resolvers,
    db,
    transport,
    logger,
    relay,
    consumers,
    closeTransport: !sharedTransport,
    ...(definition.routes ? { routes: definition.routes(deps) } : {}),
    production: config.NODE_ENV === 'production',
    context: async ({ req }) => {
      const identity = verifyIdentity(config.INTERNAL_SIGNING_SECRET, req.headers);
      const context = currentContext();
      if (context) context.tenantId = identity.tenantId;
      return { ...identity, em: db.fork(), db, log: logger };
    },
  });
  const port = options.port ?? config.PORT ?? definition.defaultPort;
  const url = await subgraph.listen(port, options.host ?? config.HOST);
  for (const worker of workers) await worker.start();
  const stopPruning = startPruning({ service: definition.name, db, pruneDb: relayDb, logger, config });
  return {
    name: definition.name,
    url,
    db,
    transport,
    consumers,
    workers,
    stop: async () => {
      await stopPruning();
      for (const worker of workers) await worker.stop();
      unwatch();
      await subgraph.stop();
      if (relayDb !== db) await relayDb.close();
    },
  };
}

/**
 * A process entry point: start something, stop it gracefully on SIGTERM/SIGINT (exit 0, or 1
 * when stopping fails), and on a start-up error (e.g. every invalid setting) print it and exit 1
 * instead of throwing a stack trace at the operator.
 */
export async function runMain(name: string, start: () => Promise<{ stop(): Promise<void> }>): Promise<void> {
  let running: { stop(): Promise<void> };
  try {
    running = await start();
  } catch (error) {
    process.stderr.write(`${name}: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${name}: ${signal}, shutting down\n`);
    running.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** A subgraph service's production entry point: {@link startService} from the environment under {@link runMain}. */
export function runServiceMain<C extends SubgraphConfig>(definition: ServiceDefinition<C>): Promise<void> {
  return runMain(definition.name, () => startService(definition));
}
