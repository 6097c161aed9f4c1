import { cosine } from '@tributary/ai';
import type { ParsedEvent } from '@tributary/contracts';
import { queryRows } from '@tributary/core/db';
import { publish, type NewEvent } from '@tributary/core/events';
import { ApiErrorCode, notFound, pageSize } from '@tributary/core/graphql';
import type { SubgraphContext } from '@tributary/core/service';
import { GraphQLError } from 'graphql';
import { queueSettings, type AnalysisConfig } from './config.ts';
import { DocumentEmbedding } from './entities.ts';
import { cancel, queuePosition } from './queue.ts';

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

/** The analysis subgraph's resolvers: similar documents, a document's analysis, a job's place in line and its cancel. */
export function resolvers(config: AnalysisConfig) {
  return {
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
  };
}

/** The one terminal event of a cancelled job: no call is made (or the one running is aborted) after it. */
export function cancelledEvent(documentId: string, jobId: string, tenantId: string, attempts: number, causedBy?: ParsedEvent): NewEvent<'analysis.cancelled'> {
  return {
    type: 'analysis.cancelled',
    subject: documentId,
    tenantId,
    ...(causedBy ? { causedBy } : {}),
    // Tokens: a call aborted mid-flight reports none; what the provider counted for it is in its own usage records.
    data: { documentId, jobId, attempts, tokens: { prompt: 0, completion: 0 }, cancelledAt: new Date().toISOString() },
  };
}
