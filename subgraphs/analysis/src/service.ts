import { aiConfigSchema, aiEntities, aiMetrics, aiMigrations, cosine, createAnalyzerFromEnv, createEmbedderFromEnv, type Analyzer, type Embedder } from '@tributary/ai';
import type { ParsedEvent } from '@tributary/contracts';
import { ApiErrorCode, notFound, pageSize } from '@tributary/core/graphql';
import { externalCounter, watchGauge } from '@tributary/core/metrics';
import { queryRows, type Database } from '@tributary/core/db';
import { publish, type NewEvent } from '@tributary/core/events';
import { GraphQLError } from 'graphql';
import { randomUUID } from 'node:crypto';
import { subgraphConfigSchema, type ServiceDefinition, type SubgraphContext } from '@tributary/core/service';
import { z } from 'zod';
import { Analysis, DocumentEmbedding, migrations } from './entities.ts';
import { cancel, claimNext, enqueue, queuePosition, type QueueSettings } from './queue.ts';
import { AnalysisScheduler } from './scheduler.ts';
import { typeDefs } from './schema.ts';
import { analyzeClaimed, startedEvent } from './work.ts';

const delays = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'must be comma-separated milliseconds, e.g. 1000,5000,30000')
  .transform((s) => s.split(',').map(Number));

const weights = z
  .string()
  .transform((s, ctx) => {
    const map = new Map<string, number>();
    for (const entry of s.split(',').filter((e) => e.trim() !== '')) {
      const at = entry.lastIndexOf('=');
      const tenant = entry.slice(0, at).trim();
      const weight = Number(entry.slice(at + 1));
      if (at <= 0 || tenant === '' || !Number.isFinite(weight) || weight < 0.01 || weight > 1000) {
        ctx.addIssue({ code: 'custom', message: `"${entry}": expected tenant=weight with a weight from 0.01 to 1000` });
        return z.NEVER;
      }
      map.set(tenant, weight);
    }
    return map;
  });

export const configSchema = subgraphConfigSchema.extend({
  ...aiConfigSchema.shape,
  /** Attempts per document before its job FAILS (the first one counts). Default 5. */
  ANALYSIS_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(5),
  /** Delays between attempts, ms; the last repeats. Default 1000,5000,30000,120000. */
  ANALYSIS_RETRY_DELAYS_MS: delays.default([1_000, 5_000, 30_000, 120_000]),
  /**
   * Documents analysed at once by one process: model calls in flight, set by what the provider
   * allows (no database connection is held during a call). Default 32.
   */
  ANALYSIS_CONCURRENCY: z.coerce.number().int().min(1).max(512).default(32),
  /** How long a claim on a document holds without renewal before another worker may take it over, ms. Default 30000. */
  ANALYSIS_LEASE_MS: z.coerce.number().int().min(500).max(3_600_000).default(30_000),
  /** `fair`: by tenant (fair share), then priority; `fifo`: arrival order (the baseline). Default fair. */
  ANALYSIS_ORDER: z.enum(['fair', 'fifo']).default('fair'),
  /** The waiting one priority level is worth, ms: LOW work is overtaken only by work enqueued less than two steps after it. Default 60000. */
  ANALYSIS_PRIORITY_STEP_MS: z.coerce.number().int().min(0).max(86_400_000).default(60_000),
  /** Model calls in flight for one tenant across all analysis processes; 0: no cap. Default 0. */
  ANALYSIS_TENANT_CONCURRENCY: z.coerce.number().int().min(0).max(10_000).default(0),
  /** Fair-share weights, `tenant=weight,…` (weights 0.01..1000; others 1): a weight of 2 gets twice the turns. Default none. */
  ANALYSIS_TENANT_WEIGHTS: weights.default(new Map()),
});
export type AnalysisConfig = z.infer<typeof configSchema>;

export interface AnalysisServiceOptions {
  /** The analyzer to use; default: from the environment (OpenAI-compatible with a key, else offline). */
  analyzer?: Analyzer;
  /** The embedder to use; default: from the environment. */
  embedder?: Embedder;
}

/** Prometheus counters fed by the AI package's own (it does not depend on prom-client). */
function exportAiMetrics(): void {
  const counters = {
    tokensIn: externalCounter('tributary_llm_tokens_total', 'LLM tokens, by direction', ['direction']),
    cacheHits: externalCounter('tributary_llm_cache_hits_total', 'Analyses answered from the response cache'),
    cacheMisses: externalCounter('tributary_llm_cache_misses_total', 'Analyses that had to call a provider'),
    fallbacks: externalCounter('tributary_llm_fallbacks_total', 'Calls that fell back to the next provider'),
    budgetRefusals: externalCounter('tributary_llm_budget_refusals_total', 'Calls refused by the daily token budget'),
    retries: externalCounter('tributary_llm_retries_total', 'Provider calls retried'),
  };
  aiMetrics.onIncrement((name, by) => {
    if (name === 'tokensIn') counters.tokensIn.inc({ direction: 'in' }, by);
    else if (name === 'tokensOut') counters.tokensIn.inc({ direction: 'out' }, by);
    else counters[name].inc(by);
  });
}
let aiMetricsExported = false;

interface AnalysisRow {
  summary: string | null;
  themes: { name: string; score: number }[] | string | null;
  keywords: string[] | string | null;
  sentiment: { label: 'POSITIVE' | 'NEUTRAL' | 'NEGATIVE'; score: number } | string | null;
  provider: string | null;
  model: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached: boolean;
  chunks: number;
  truncated: boolean;
}

/** A json(b) column as the driver hands it over: parsed by pg, text from some drivers. */
const json = <T>(value: T | string | null): T | null => (typeof value === 'string' ? (JSON.parse(value) as T) : value);

function rowToGraphQL(row: AnalysisRow) {
  return {
    summary: row.summary ?? '',
    themes: json(row.themes) ?? [],
    keywords: json(row.keywords) ?? [],
    sentiment: json(row.sentiment) ?? { label: 'NEUTRAL' as const, score: 0 },
    provider: row.provider ?? 'unknown',
    model: row.model ?? 'unknown',
    tokens: { prompt: row.prompt_tokens ?? 0, completion: row.completion_tokens ?? 0 },
    cached: row.cached,
    chunks: row.chunks,
    truncated: row.truncated,
  };
}

/** The analysis service; pass an analyzer to replace the default (tests, other providers). */
export function createAnalysisService(options: AnalysisServiceOptions = {}): ServiceDefinition<AnalysisConfig> {
  return {
    name: 'analysis',
    typeDefs,
    entities: [Analysis, DocumentEmbedding, ...aiEntities],
    migrations: [...migrations, ...aiMigrations],
    configSchema,
    defaultPort: 4003,
    workers: ({ config, env, logger, db }) => {
      if (!aiMetricsExported) {
        aiMetricsExported = true;
        exportAiMetrics();
      }
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
    resolvers: ({ config }) => ({
      Mutation: {
        cancelJob: async (_: unknown, args: { id: string }, ctx: SubgraphContext) => {
          const outcome = await ctx.em.fork().transactional(async (em) => {
            const result = await cancel(em, args.id, ctx.tenantId);
            if (result.kind === 'cancelled') await publish(em, 'analysis', [cancelledEvent(result.documentId, args.id, ctx.tenantId, result.attempts)]);
            return result;
          });
          if (outcome.kind === 'finished') {
            throw new GraphQLError(`Job ${args.id} is already ${outcome.status} and cannot be cancelled`, { extensions: { code: ApiErrorCode.JOB_ALREADY_FINISHED, id: args.id, status: outcome.status } });
          }
          // A job whose document has not reached analysis yet is cancelled when it does, with no call.
          return { id: args.id, status: 'CANCELLED' };
        },
      },
      Job: {
        __resolveReference: (ref: { id: string }) => ({ id: ref.id }),
        queuePosition: (job: { id: string }, _: unknown, ctx: SubgraphContext) => queuePosition(ctx.em, job.id, ctx.tenantId, queueSettings(config)),
      },
      Query: {
        similarDocuments: async (_: unknown, args: { documentId: string; first?: number | null }, ctx: SubgraphContext) => {
          const limit = pageSize(args.first, 5, 50);
          const target = await ctx.em.findOne(DocumentEmbedding, { documentId: args.documentId, tenantId: ctx.tenantId });
          if (!target) {
            // Unknown, another tenant's, or not analysed yet: all look the same from outside.
            throw notFound('Document', args.documentId);
          }
          const candidates = await ctx.em.find(DocumentEmbedding, { tenantId: ctx.tenantId, provider: target.provider, model: target.model, documentId: { $ne: target.documentId } });
          return candidates
            .map((c) => ({ document: { id: c.documentId }, score: Math.round(cosine(target.vector, c.vector) * 10_000) / 10_000 }))
            .sort((a, b) => b.score - a.score || a.document.id.localeCompare(b.document.id))
            .slice(0, limit);
        },
      },
      Document: {
        __resolveReference: (ref: { id: string }) => ({ id: ref.id }),
        analysis: async (doc: { id: string }, _: unknown, ctx: SubgraphContext) => {
          // A plain statement: this runs for every federated read of an analysed document
          // (each jobCompleted message), where the ORM's query building costs more than the query.
          const [row] = await queryRows<AnalysisRow>(
            ctx.em,
            `select summary, themes, keywords, sentiment, provider, model, prompt_tokens, completion_tokens, cached, chunks, truncated from analyses
             where document_id = ? and tenant_id = ? and status = 'COMPLETED'`,
            [doc.id, ctx.tenantId],
          );
          return row ? rowToGraphQL(row) : null;
        },
      },
    }),
  };
}

/** The work table on /metrics: what waits and runs, deployment-wide (every analysis process reports the same figures). */
function watchWorkTable(db: Database): void {
  const read = async () => {
    const [row] = await queryRows<{ waiting: string | number; running: string | number; oldest: string | number | null }>(
      db.fork(),
      `select count(*) filter (where lease_token is null) as waiting, count(*) filter (where lease_token is not null) as running,
         extract(epoch from now() - min(enqueued_at) filter (where lease_token is null)) as oldest from analysis_queue`,
    );
    return row!;
  };
  const once = (() => {
    let pending: ReturnType<typeof read> | undefined;
    return () => (pending ??= read().finally(() => setImmediate(() => (pending = undefined))));
  })();
  watchGauge('tributary_analysis_documents', 'Documents in the analysis work table, by state: waiting for a call slot, or running', ['state'], async () => {
    const row = await once();
    return [
      [{ state: 'waiting' }, Number(row.waiting)],
      [{ state: 'running' }, Number(row.running)],
    ];
  });
  watchGauge('tributary_analysis_oldest_waiting_age_seconds', 'How long the longest-waiting document has waited for a call slot (0 when none waits)', [], async () => [[{}, Math.max(0, Number((await once()).oldest ?? 0))]]);
}

function queueSettings(config: AnalysisConfig): QueueSettings {
  return {
    order: config.ANALYSIS_ORDER,
    priorityStepMs: config.ANALYSIS_PRIORITY_STEP_MS,
    tenantConcurrency: config.ANALYSIS_TENANT_CONCURRENCY,
    tenantWeights: config.ANALYSIS_TENANT_WEIGHTS,
    leaseMs: config.ANALYSIS_LEASE_MS,
  };
}

/** The one terminal event of a cancelled job: no call is made (or the one running is aborted) after it. */
function cancelledEvent(documentId: string, jobId: string, tenantId: string, attempts: number, causedBy?: ParsedEvent): NewEvent<'analysis.cancelled'> {
  return {
    type: 'analysis.cancelled',
    subject: documentId,
    tenantId,
    ...(causedBy ? { causedBy } : {}),
    // Tokens: a call aborted mid-flight reports none; what the provider counted for it is in its own usage records.
    data: { documentId, jobId, attempts, tokens: { prompt: 0, completion: 0 }, cancelledAt: new Date().toISOString() },
  };
}

export const analysisService = createAnalysisService();
