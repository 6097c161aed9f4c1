import { analysisService, createAnalysisService, type AnalysisServiceOptions } from '@tributary/analysis';
import { baseConfigSchema, loadConfig, type BaseConfig } from '@tributary/core';
import { InMemoryTransport, type Transport } from '@tributary/core/events';
import { startService, type RunningService, type ServiceDefinition } from '@tributary/core/service';
import { documentsService } from '@tributary/documents';
import { insightsService } from '@tributary/insights';
import { jobsService } from '@tributary/jobs';
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
  stop(): Promise<void>;
}

/**
 * Gateway, the four subgraphs and their consumers in one process: what `pnpm dev` runs.
 * Without AMQP_URL they share one in-memory bus; without DATABASE_URL each has its own PGlite
 * under TRIBUTARY_DATA_DIR. With both set, the same code runs on real services.
 */
export async function startEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedSystem> {
  const env = options.env ?? process.env;
  const config = loadConfig(baseConfigSchema, env);
  let shared: Transport | undefined;
  if (!config.AMQP_URL) {
    shared = new InMemoryTransport(config.TRIBUTARY_NAMESPACE);
    await shared.start();
  }
  const services: RunningService[] = [];
  const start = async <C extends BaseConfig>(definition: ServiceDefinition<C>) => {
    services.push(await startService(definition, { env, port: 0, ...(shared ? { transport: shared } : {}) }));
  };
  try {
    await start(documentsService);
    await start(jobsService);
    await start(options.analysis ? createAnalysisService(options.analysis) : analysisService);
    await start(insightsService);
    const urls = Object.fromEntries(services.map((s) => [`${s.name.toUpperCase()}_URL`, s.url]));
    const gateway = await startGateway({
      env: { ...env, ...urls },
      ...(options.port !== undefined ? { port: options.port } : {}),
      ...(shared ? { transport: shared } : {}),
    });
    return {
      gateway,
      services,
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
