import { aiConfigSchema, aiEntities, aiMetrics, aiMigrations, cosine, createAnalyzerFromEnv, createEmbedderFromEnv, isAiError, type Analyzer, type Embedder } from '@tributary/ai';
import type { ParsedEvent } from '@tributary/contracts';
import { errorCode, errorMessage, isUnrecoverable } from '@tributary/core';
import { notFound, pageSize } from '@tributary/core/graphql';
import { externalCounter } from '@tributary/core/metrics';
import { queryRows, queryRun } from '@tributary/core/db';
import type { StagedEventHandler } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';
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
  /**
   * Documents analysed at once by one process: model calls in flight, set by what the provider
   * allows (no database connection is held during a call). Default 32.
   */
  ANALYSIS_CONCURRENCY: z.coerce.number().int().min(1).max(512).default(32),
  /** How long a claim on a document holds without renewal before another worker may take it over, ms. Default 30000. */
  ANALYSIS_LEASE_MS: z.coerce.number().int().min(500).max(3_600_000).default(30_000),
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

/** What one claim of a document holds while its model call runs. */
interface Lease {
  token: string;
  attempt: number;
}

type Claim = { kind: 'claimed'; lease: Lease } | { kind: 'held'; retryInMs: number } | { kind: 'done' };

/**
 * Analyse one uploaded document in three steps, none of which holds a database transaction
 * (or connection) across the model call:
 *
 * 1. Claim, in a short transaction: the analysis row goes RUNNING with a lease (a fresh token,
 *    an expiry on the database's clock) and `analysis.started` is published. Only a row that is
 *    new, PENDING, or RUNNING under an expired lease can be claimed; a live lease elsewhere
 *    hands this delivery back until it expires (the holder holds its own unacked delivery and
 *    finishes the work, or dies and the broker redelivers it), and a finished row ends here.
 * 2. The model call and the embedding, with no transaction open. The lease is renewed every
 *    third of its length; if a renewal finds it taken over, the call is aborted.
 * 3. Settle, in a short transaction that also records the event in the inbox: store the result
 *    and publish `analysis.completed` (or, when retrying cannot help or attempts are used up,
 *    FAILED with `analysis.failed`), but only while the lease is still this claim's. A lost
 *    lease rolls the transaction back: the claim that took it over stores its own result.
 *
 * So each document gets one stored result and one completed or failed event, and no second
 * paid call while a live lease exists: two deliveries of the event at once, two analysis
 * processes on one queue, or a worker killed mid-call (its work taken over once the lease
 * expires). A retryable failure gives the lease back at once, for the next attempt.
 */
export function analyzeDocument(analyzer: Analyzer, embedder: Embedder, leaseMs: number): StagedEventHandler {
  const leaseSql = `now() + (${Math.round(leaseMs)} * interval '1 millisecond')`;
  return async (event, { transaction, settle, attempt, lastAttempt, log }) => {
    if (event.dataschema !== 'document.uploaded/v1') return;
    const { documentId, jobId, title, text } = event.data;
    const tenantId = event.tenantid;
    const token = randomUUID();

    const claim = await transaction<Claim>(async ({ em, publish }) => {
      const now = new Date().toISOString();
      const [claimed] = await queryRows<{ attempts: number }>(
        em,
        `insert into analyses (document_id, job_id, tenant_id, status, title, cached, attempts, lease_token, lease_expires_at, created_at, updated_at)
         values (?, ?, ?, 'RUNNING', ?, false, 1, ?, ${leaseSql}, ?, ?)
         on conflict (document_id) do update set status = 'RUNNING', attempts = analyses.attempts + 1, lease_token = excluded.lease_token,
           lease_expires_at = excluded.lease_expires_at, updated_at = excluded.updated_at
         where analyses.status in ('PENDING', 'RUNNING') and (analyses.lease_expires_at is null or analyses.lease_expires_at <= now())
         returning attempts`,
        [documentId, jobId, tenantId, title, token, now, now],
      );
      if (!claimed) {
        const [row] = await queryRows<{ status: string; wait_ms: number | string | null }>(
          em,
          `select status, extract(epoch from (lease_expires_at - now())) * 1000 as wait_ms from analyses where document_id = ?`,
          [documentId],
        );
        if (row?.status !== 'RUNNING') return { kind: 'done' };
        return { kind: 'held', retryInMs: Math.max(0, Number(row.wait_ms ?? 0)) + 50 };
      }
      await publish([{ type: 'analysis.started', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, attempt: claimed.attempts, startedAt: now } }]);
      return { kind: 'claimed', lease: { token, attempt: claimed.attempts } };
    });
    if (claim.kind === 'held') return { retryInMs: claim.retryInMs };
    if (claim.kind === 'done') return;
    const { lease } = claim;

    // Renew while the call runs; a renewal that finds the lease taken over aborts the call.
    const abort = new AbortController();
    const renewal = setInterval(() => {
      transaction(({ em }) =>
        queryRun(em, `update analyses set lease_expires_at = ${leaseSql} where document_id = ? and lease_token = ? and status = 'RUNNING'`, [documentId, lease.token]),
      ).then(
        (renewed) => renewed === 0 && abort.abort(new Error(`the lease on document ${documentId} was taken over`)),
        (error: unknown) => log.warn({ documentId, err: errorMessage(error) }, 'could not renew an analysis lease; it may be taken over when it expires'),
      );
    }, leaseMs / 3);
    // A long document's progress, each step in a short transaction of its own, in order; all of
    // them written before the result (a job's view ignores progress once it is finished anyway).
    let progressWrites = Promise.resolve();
    const onProgress = ({ done, total }: { done: number; total: number }) => {
      progressWrites = progressWrites.then(() =>
        transaction(({ publish }) =>
          publish([{ type: 'analysis.progress', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, done, total, at: new Date().toISOString() } }]),
        ).catch((error: unknown) => log.warn({ documentId, err: errorMessage(error) }, 'could not publish analysis progress')),
      );
    };
    let outcome: { result: Awaited<ReturnType<Analyzer['analyze']>>; vector: number[] } | { error: unknown };
    try {
      const result = await analyzer.analyze({ text, title }, { tenantId, signal: abort.signal, onProgress });
      // The embedding goes with the analysis: a document is searchable once it is analysed.
      const [vector] = await embedder.embed([`${title}\n\n${text}`]);
      outcome = { result, vector: vector! };
    } catch (error) {
      outcome = { error };
    } finally {
      clearInterval(renewal);
      await progressWrites;
    }

    const now = new Date().toISOString();
    const mine = 'document_id = ? and lease_token = ? and status = \'RUNNING\'';
    if ('error' in outcome) {
      const { error } = outcome;
      const unrecoverable = isUnrecoverable(error) || (isAiError(error) && error.unrecoverable);
      if (!unrecoverable && !lastAttempt && !abort.signal.aborted) {
        // Give the lease back so the retry can claim at once; if this fails, it waits out the expiry.
        await transaction(({ em }) => queryRun(em, `update analyses set lease_expires_at = now() where ${mine}`, [documentId, lease.token])).catch(() => {});
        throw error;
      }
      if (abort.signal.aborted) return;
      const failure = { code: errorCode(error), message: errorMessage(error) };
      const stored = await settle(async ({ em, publish }) => {
        const updated = await queryRun(em, `update analyses set status = 'FAILED', error_code = ?, error_message = ?, lease_expires_at = null, updated_at = ? where ${mine}`, [
          failure.code,
          failure.message,
          now,
          documentId,
          lease.token,
        ]);
        if (updated === 0) return false;
        await publish([{ type: 'analysis.failed', subject: documentId, tenantId, causedBy: event, data: { documentId, jobId, error: failure, attempts: lease.attempt, failedAt: now } }]);
        return true;
      });
      if (stored === 'settled') log.warn({ documentId, jobId, attempt, ...failure }, 'analysis failed for good');
      return;
    }

    const { result, vector } = outcome;
    await settle(async ({ em, publish }) => {
      const updated = await queryRun(
        em,
        `update analyses set status = 'COMPLETED', summary = ?, themes = ?::jsonb, keywords = ?::jsonb, sentiment = ?::jsonb, provider = ?, model = ?,
           prompt_tokens = ?, completion_tokens = ?, cached = ?, chunks = ?, truncated = ?, lease_expires_at = null, updated_at = ? where ${mine}`,
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
          result.chunks ?? 1,
          result.truncated ?? false,
          now,
          documentId,
          lease.token,
        ],
      );
      if (updated === 0) return false;
      await queryRun(
        em,
        `insert into document_embeddings (document_id, tenant_id, provider, model, vector, created_at) values (?, ?, ?, ?, ?::jsonb, ?)
         on conflict (document_id) do update set tenant_id = excluded.tenant_id, provider = excluded.provider, model = excluded.model, vector = excluded.vector, created_at = excluded.created_at`,
        [documentId, tenantId, embedder.provider, embedder.model, JSON.stringify(vector), now],
      );
      await publish([
        {
          type: 'analysis.completed',
          subject: documentId,
          tenantId,
          causedBy: event,
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
            attempts: lease.attempt,
            completedAt: now,
          },
        },
      ]);
      return true;
    });
    return undefined;
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
    consumers: ({ config, env, logger, db }) => {
      if (!aiMetricsExported) {
        aiMetricsExported = true;
        exportAiMetrics();
      }
      // Providers and their settings are named at run time (AI_PROVIDERS): read from the environment.
      const ai = { ...env, ...config };
      const analyzer = options.analyzer ?? createAnalyzerFromEnv(ai, { db, logger, callConcurrency: config.ANALYSIS_CONCURRENCY });
      const embedder = options.embedder ?? createEmbedderFromEnv(ai, { logger });
      return [
        {
          name: 'document-uploaded',
          types: ['document.uploaded'],
          stagedHandler: analyzeDocument(analyzer, embedder, config.ANALYSIS_LEASE_MS),
          // Twice the model calls: while ANALYSIS_CONCURRENCY calls run, as many documents are
          // claimed and waiting for a call slot, so a slot that frees is taken at once, not after
          // the next claim's round trips.
          concurrency: config.ANALYSIS_CONCURRENCY * 2,
          // And room for deliveries waiting out another worker's lease.
          prefetch: config.ANALYSIS_CONCURRENCY * 4,
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
            `select summary, themes, keywords, sentiment, provider, model, prompt_tokens, completion_tokens, cached, chunks, truncated from analyses
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
