import { aiConfigSchema, aiEntities, aiMetrics, aiMigrations, cosine, createAnalyzerFromEnv, createEmbedderFromEnv, isAiError, type Analyzer, type Embedder } from '@tributary/ai';
import type { ParsedEvent } from '@tributary/contracts';
import { errorCode, errorMessage, isUnrecoverable } from '@tributary/core';
import { notFound, pageSize } from '@tributary/core/graphql';
import { externalCounter } from '@tributary/core/metrics';
import { queryRows, queryRun, valuesPlaceholders } from '@tributary/core/db';
import type { HandlerContext } from '@tributary/core/events';
import { subgraphConfigSchema, type ServiceDefinition, type SubgraphContext } from '@tributary/core/service';
import { z } from 'zod';
import { Analysis, DocumentEmbedding, migrations } from './entities.ts';
import { typeDefs } from './schema.ts';

const delays = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'must be comma-separated milliseconds, e.g. 1000,5000,30000')
  .transform((s) => s.split(',').map(Number));

export const configSchema = subgraphConfigSchema.extend({
  ...aiConfigSchema.shape,
  /** Attempts per document before its job FAILS (the first one counts). Default 5. */
  ANALYSIS_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(5),
  /** Delays between attempts, ms; the last repeats. Default 1000,5000,30000,120000. */
  ANALYSIS_RETRY_DELAYS_MS: delays.default([1_000, 5_000, 30_000, 120_000]),
  /** Documents analysed at once by one process. Default 4. */
  ANALYSIS_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
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

/**
 * Stage 1 (fast): remember each document's text and announce its analysis has started. A
 * document announced twice (a replayed upload) gets one analysis. One statement for the batch,
 * rows in document order (concurrent batches wait for each other instead of deadlocking).
 */
export async function acceptDocuments(events: ParsedEvent[], { em, publish }: HandlerContext): Promise<void> {
  const uploads = new Map<string, ParsedEvent<'document.uploaded/v1'>>();
  for (const event of events) if (event.dataschema === 'document.uploaded/v1' && !uploads.has(event.data.documentId)) uploads.set(event.data.documentId, event);
  if (uploads.size === 0) return;
  const ordered = [...uploads.values()].sort((a, b) => (a.data.documentId < b.data.documentId ? -1 : 1));
  const now = new Date().toISOString();
  const params: unknown[] = [];
  for (const e of ordered) params.push(e.data.documentId, e.data.jobId, e.tenantid, e.data.title, e.data.text, now);
  const inserted = await queryRows<{ document_id: string }>(
    em,
    `insert into analyses (document_id, job_id, tenant_id, status, title, text, cached, attempts, created_at, updated_at)
     select v.document_id, v.job_id, v.tenant_id, 'PENDING', v.title, v.text, false, 0, v.at::timestamptz, v.at::timestamptz
     from (values ${valuesPlaceholders(ordered.length, 6)}) as v (document_id, job_id, tenant_id, title, text, at) order by v.document_id
     on conflict (document_id) do nothing returning document_id`,
    params,
  );
  await publish(
    inserted.map(({ document_id: documentId }) => {
      const event = uploads.get(documentId)!;
      return { type: 'analysis.started' as const, subject: documentId, tenantId: event.tenantid, causedBy: event, data: { documentId, jobId: event.data.jobId, attempt: 1, startedAt: now } };
    }),
  );
}

/**
 * Stage 2 (slow): run the analyzer and store the result with `analysis.completed`. A failure
 * is retried through the consumer's tiers; on the last attempt, or when retrying cannot help,
 * the analysis is stored as FAILED with `analysis.failed`, so the job ends instead of hanging.
 * The AI call runs inside the transaction on purpose: the inbox row taken first means a
 * duplicate delivery waits for this one instead of paying for a second call.
 */
function runAnalysis(analyzer: Analyzer, embedder: Embedder) {
  return async (event: ParsedEvent, { em, publish, attempt, lastAttempt, log }: HandlerContext): Promise<void> => {
    if (event.dataschema !== 'analysis.started/v1') return;
    const { documentId } = event.data;
    const [analysis] = await queryRows<{ job_id: string; tenant_id: string; title: string; text: string }>(
      em,
      `select job_id, tenant_id, title, text from analyses where document_id = ? and status = 'PENDING'`,
      [documentId],
    );
    if (!analysis) return;
    const { job_id: jobId, tenant_id: tenantId, title, text } = analysis;
    const now = new Date().toISOString();
    let result;
    try {
      result = await analyzer.analyze({ text, title }, { tenantId });
    } catch (error) {
      const unrecoverable = isUnrecoverable(error) || (isAiError(error) && error.unrecoverable);
      if (!unrecoverable && !lastAttempt) throw error;
      const failure = { code: errorCode(error), message: errorMessage(error) };
      log.warn({ documentId, jobId, attempt, ...failure }, 'analysis failed for good');
      await queryRun(em, `update analyses set status = 'FAILED', error_code = ?, error_message = ?, attempts = ?, updated_at = ? where document_id = ?`, [
        failure.code,
        failure.message,
        attempt,
        now,
        documentId,
      ]);
      await publish([{ type: 'analysis.failed', subject: documentId, data: { documentId, jobId, error: failure, attempts: attempt, failedAt: now } }]);
      return;
    }
    await queryRun(
      em,
      `update analyses set status = 'COMPLETED', summary = ?, themes = ?::jsonb, keywords = ?::jsonb, sentiment = ?::jsonb, provider = ?, model = ?,
         prompt_tokens = ?, completion_tokens = ?, cached = ?, attempts = ?, updated_at = ? where document_id = ?`,
      [
        result.summary,
        JSON.stringify(result.themes),
        JSON.stringify(result.keywords),
        JSON.stringify(result.sentiment),
        result.provider,
        result.model,
        result.tokens.prompt,
        result.tokens.completion,
        result.cached,
        attempt,
        now,
        documentId,
      ],
    );
    // The embedding goes with the analysis: a document is searchable once it is analysed.
    const [vector] = await embedder.embed([`${title}\n\n${text}`]);
    await queryRun(
      em,
      `insert into document_embeddings (document_id, tenant_id, provider, model, vector, created_at) values (?, ?, ?, ?, ?::jsonb, ?)
       on conflict (document_id) do update set tenant_id = excluded.tenant_id, provider = excluded.provider, model = excluded.model, vector = excluded.vector, created_at = excluded.created_at`,
      [documentId, tenantId, embedder.provider, embedder.model, JSON.stringify(vector!), now],
    );
    const completedAt = new Date().toISOString();
    await publish([
      {
        type: 'analysis.completed',
        subject: documentId,
        data: {
          documentId,
          jobId,
          summary: result.summary,
          themes: result.themes,
          keywords: result.keywords,
          sentiment: result.sentiment,
          provider: result.provider,
          model: result.model,
          tokens: result.tokens,
          attempts: attempt,
          completedAt,
        },
      },
    ]);
  };
}

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
    consumers: ({ config, logger, db }) => {
      if (!aiMetricsExported) {
        aiMetricsExported = true;
        exportAiMetrics();
      }
      const analyzer = options.analyzer ?? createAnalyzerFromEnv(config, { db, logger });
      const embedder = options.embedder ?? createEmbedderFromEnv(config, { logger });
      return [
        { name: 'document-uploaded', types: ['document.uploaded'], batchHandler: acceptDocuments },
        {
          name: 'analysis-started',
          types: ['analysis.started'],
          handler: runAnalysis(analyzer, embedder),
          // One document per transaction: a batch would hold finished analyses hostage to slow ones.
          maxBatch: 1,
          concurrency: config.ANALYSIS_CONCURRENCY,
          prefetch: config.ANALYSIS_CONCURRENCY * 2,
          maxAttempts: config.ANALYSIS_MAX_ATTEMPTS,
          retryDelaysMs: config.ANALYSIS_RETRY_DELAYS_MS,
        },
      ];
    },
    resolvers: {
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
            `select summary, themes, keywords, sentiment, provider, model, prompt_tokens, completion_tokens, cached from analyses
             where document_id = ? and tenant_id = ? and status = 'COMPLETED'`,
            [doc.id, ctx.tenantId],
          );
          return row ? rowToGraphQL(row) : null;
        },
      },
    },
  };
}

export const analysisService = createAnalysisService();
