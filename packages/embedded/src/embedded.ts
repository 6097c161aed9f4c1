import { analysisService, createAnalysisService, type AnalysisServiceOptions } from '@tributary/analysis';
import { baseConfigSchema, ConfigError, loadConfig } from '@tributary/core';
import { InMemoryTransport, type Transport } from '@tributary/core/events';
import { startService, type RunningService, type ServiceDefinition, type SubgraphConfig } from '@tributary/core/service';
import { documentsService } from '@tributary/documents';
import { insightsService } from '@tributary/insights';
import { jobsService } from '@tributary/jobs';
import { generateSecret, signToken } from './auth.ts';
import { startGateway, type RunningGateway } from './gateway.ts';

export interface EmbeddedOptions {
  env?: Record<string, string | undefined>;
  /** Gateway port (default 4000; 0 picks a free one). Subgraphs take free ports. */
  port?: number;
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

/**
 * Gateway, the four subgraphs and their consumers in one process: what `pnpm dev` runs.
 * Without AMQP_URL they share one in-memory bus; without DATABASE_URL each has its own PGlite
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
  let shared: Transport | undefined;
  if (!config.AMQP_URL) {
    shared = new InMemoryTransport(config.TRIBUTARY_NAMESPACE);
    await shared.start();
  }
  const services: RunningService[] = [];
  const start = async <C extends SubgraphConfig>(definition: ServiceDefinition<C>) => {
    services.push(await startService(definition, { env, port: 0, ...(shared ? { transport: shared } : {}) }));
  };
  try {
    await start(documentsService);
    await start(jobsService);
    await start(options.analysis ? createAnalysisService(options.analysis) : analysisService);
    await start(insightsService);
    const urls = Object.fromEntries(services.map((s) => [`${s.name.toUpperCase()}_URL`, s.url]));
    const authSecret = env.AUTH_JWT_SECRET;
    const devToken = authSecret
      ? await signToken(authSecret, { sub: 'developer', tenant: 'dev', ...(env.AUTH_ISSUER ? { issuer: env.AUTH_ISSUER } : {}), ...(env.AUTH_AUDIENCE ? { audience: env.AUTH_AUDIENCE } : {}) })
      : undefined;
    const gateway = await startGateway({
      env: { ...env, ...urls },
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(shared ? { transport: shared } : {}),
      // The demo page and GraphiQL pre-fill it; the gateway drops it in production.
      ...(devToken ? { devToken } : {}),
    });
    return {
      gateway,
      services,
      authSecret,
      devToken,
      stop: async () => {
        await gateway.stop();
        for (const service of services.reverse()) await service.stop();
        await shared?.close();
      },
    };
  } catch (error) {
    for (const service of services.reverse()) await service.stop().catch(() => {});
    await shared?.close();
    throw error;
  }
}
