import { aiEntities, aiMigrations, createAnalyzerFromEnv, createEmbedderFromEnv, type Analyzer, type Embedder } from '@tributary/ai';
import { publish } from '@tributary/core/events';
import type { ServiceDefinition } from '@tributary/core/service';
import { randomUUID } from 'node:crypto';
import { configSchema, queueSettings, type AnalysisConfig } from './config.ts';
import { Analysis, DocumentEmbedding, migrations } from './entities.ts';
import { exportAiMetrics, watchWorkTable } from './metrics.ts';
import { claimNext, enqueue } from './queue.ts';
import { cancelledEvent, resolvers } from './resolvers.ts';
import { AnalysisScheduler } from './scheduler.ts';
import { typeDefs } from './schema.ts';
import { analyzeClaimed, startedEvent } from './work.ts';

export { configSchema, type AnalysisConfig } from './config.ts';

export interface AnalysisServiceOptions {
  /** The analyzer to use; default: from the environment (OpenAI-compatible with a key, else offline). */
  analyzer?: Analyzer;
  /** The embedder to use; default: from the environment. */
  embedder?: Embedder;
}

export function createAnalysisService(options: AnalysisServiceOptions = {}): ServiceDefinition<AnalysisConfig> {
  return {
    name: 'analysis',
    typeDefs,
    entities: [Analysis, DocumentEmbedding, ...aiEntities],
    migrations: [...migrations, ...aiMigrations],
    configSchema,
    defaultPort: 4003,
    workers: ({ config, env, logger, db }) => {
      exportAiMetrics();
      // Providers and their settings are named at run time (AI_PROVIDERS): read from the environment.
      const ai = { ...env, ...config };
      const analyzer = options.analyzer ?? createAnalyzerFromEnv(ai, { db, logger, callConcurrency: config.ANALYSIS_CONCURRENCY });
      const embedder = options.embedder ?? createEmbedderFromEnv(ai, { logger });
      const settings = queueSettings(config);
      watchWorkTable(db);
      const scheduler: AnalysisScheduler = new AnalysisScheduler({
        db,
        logger,
        slots: config.ANALYSIS_CONCURRENCY,
        claim: async (em) => {
          const claimed = await claimNext(em, settings, randomUUID());
          if (claimed) await publish(em, 'analysis', [startedEvent(claimed)]);
          return claimed;
        },
        work: analyzeClaimed({
          db,
          analyzer,
          embedder,
          log: logger.child({ component: 'analysis' }),
          leaseMs: config.ANALYSIS_LEASE_MS,
          maxAttempts: config.ANALYSIS_MAX_ATTEMPTS,
          retryDelaysMs: config.ANALYSIS_RETRY_DELAYS_MS,
          onRetryScheduled: (ms) => setTimeout(() => scheduler.wake(), ms + 5).unref(),
        }),
      });
      return [scheduler];
    },
    consumers: ({ config, workers }) => {
      const settings = queueSettings(config);
      const scheduler = workers.find((w) => w instanceof AnalysisScheduler);
      return [
        {
          name: 'document-uploaded',
          types: ['document.uploaded'],
          // Into the work table, in the inbox's transaction; the call slots take it from there.
          batchHandler: async (events, { em, publish: publishEvents }) => {
            const { cancelled } = await enqueue(em, events, settings);
            if (cancelled.length > 0) await publishEvents(cancelled.map((e) => cancelledEvent(e.data.documentId, e.data.jobId, e.tenantid, 0, e)));
          },
          // This process's slots start at once, without waiting for the notification's round trip.
          onApplied: () => scheduler?.wake(),
        },
      ];
    },
    resolvers: ({ config }) => resolvers(config),
  };
}

export const analysisService = createAnalysisService();
