import { aiEntities, aiMigrations, createAnalyzerFromEnv, createEmbedderFromEnv, type Analyzer, type Embedder } from '@tributary/ai';
import { publish } from '@tributary/core/events';
import type { ServiceDefinition } from '@tributary/core/service';
import { randomUUID } from 'node:crypto';
import type { EntityManager } from '@tributary/core/db';
import { configSchema, queueSettings, type AnalysisConfig } from './config.ts';
import { Analysis, DocumentEmbedding, migrations } from './entities.ts';
import { exportAiMetrics, watchWorkTable } from './metrics.ts';
import { announceWork, claimNext, enqueue, type Claimed, type QueueSettings } from './queue.ts';
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
        claim: (em) => claim(em, settings),
        freedSlotMayUnblock: settings.tenantConcurrency > 0,
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
          // Into the work table, in the inbox's transaction, claiming what this process's free slots can take at once.
          batchHandler: async (events, { em, publish: publishEvents, afterTransaction }) => {
            // This process's free slots claim now, in this transaction, in the table's order: at
            // low load no claim transaction of its own and no wake-up. Only work left waiting
            // (or work of others' taken instead) is announced to every process.
            const reservation = scheduler?.reserve(events.length);
            const slots = reservation?.slots ?? 0;
            const { cancelled, queued, claimed } = await enqueue(em, events, settings, slots);
            afterTransaction((committed) => reservation?.end(committed, claimed));
            if (cancelled.length > 0) await publishEvents(cancelled.map((e) => cancelledEvent(e.data.documentId, e.data.jobId, e.tenantid, 0, e)));
            if (queued.length === 0) return;
            // Queued but not claimed with it (the table had claimable work): claim in order.
            while (claimed.length < slots && claimed.length < queued.length) {
              const next = await claimNext(em, settings, randomUUID());
              if (!next) break;
              claimed.push(next);
            }
            if (claimed.length > 0) await publishEvents(claimed.map(startedEvent));
            const mine = new Set(queued);
            if (claimed.length < queued.length || claimed.some((c) => !mine.has(c.documentId))) await announceWork(em);
          },
        },
      ];
    },
    resolvers: ({ config }) => resolvers(config),
  };
}

/** Claim the next document in the transaction given, and publish that its analysis started. */
async function claim(em: EntityManager, settings: QueueSettings): Promise<Claimed | undefined> {
  const claimed = await claimNext(em, settings, randomUUID());
  if (claimed) await publish(em, 'analysis', [startedEvent(claimed)]);
  return claimed;
}

export const analysisService = createAnalysisService();
