import type { Logger } from '@tributary/core';
import type { Database } from '@tributary/core/db';
import { AiError, isAiError } from './errors.ts';
import { aiMetrics, type AiMetrics } from './metrics.ts';
import type { LlmProvider } from './provider.ts';
import { ResponseCache } from './store/cache.ts';
import { TokenLedger } from './store/ledger.ts';
import type { AnalysisInput, AnalysisResult, AnalyzeOptions, Analyzer } from './types.ts';

export interface GuardedAnalyzerOptions {
  /** The analysis database, migrated with {@link aiMigrations}. */
  db: Database;
  /** Tokens each tenant may spend per UTC day (reserved estimates count until settled). */
  dailyTokenBudget: number;
  /** Over budget, analyse with this (e.g. an `OfflineAnalyzer`) instead of failing. Default: fail with `BUDGET_EXCEEDED`. */
  budgetFallback?: Analyzer;
  /** Whether to use the response cache. Default true. */
  cache?: boolean;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
  logger?: Pick<Logger, 'warn' | 'error'>;
  /** The clock deciding the UTC day; tests move it. */
  now?: () => Date;
}

/** The tenant charged when a call names none. */
export const DEFAULT_TENANT = 'default';

/**
 * An {@link LlmProvider} (usually a {@link ChainAnalyzer}) behind the response cache and the token
 * budget, in that order: a cache hit spends nothing, so it is served even over budget.
 *
 * 1. Cache lookup by each provider's {@link LlmProvider.cacheKey}, in chain order. A hit returns the
 *    stored answer with `cached: true`, the provider and model that made it, and 0/0 tokens.
 * 2. Reserve the call's estimate in the tenant's ledger for today (atomic; see {@link TokenLedger}).
 *    Refused: `BUDGET_EXCEEDED` (unrecoverable), or the `budgetFallback` analyzer.
 * 3. Call, settle the reservation with the actual usage (also when the call failed), store the answer.
 */
export class GuardedAnalyzer implements Analyzer {
  readonly provider: string;
  readonly model: string;
  private readonly providers: readonly LlmProvider[];
  private readonly ledger: TokenLedger;
  private readonly cache: ResponseCache | undefined;
  private readonly metrics: AiMetrics;

  constructor(
    private readonly inner: LlmProvider & { readonly providers?: readonly LlmProvider[] },
    private readonly options: GuardedAnalyzerOptions,
  ) {
    this.provider = inner.provider;
    this.model = inner.model;
    this.providers = inner.providers ?? [inner];
    this.ledger = new TokenLedger(options.db, options.now);
    this.cache = options.cache === false ? undefined : new ResponseCache(options.db);
    this.metrics = options.metrics ?? aiMetrics;
  }

  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    options.signal?.throwIfAborted();
    if (input.text.trim() === '') throw new AiError('EMPTY_INPUT', 'Nothing to analyse: the text is empty');
    const tenantId = options.tenantId ?? DEFAULT_TENANT;

    if (this.cache) {
      const hit = await this.cache.get(this.providers.map((p) => p.cacheKey(input)));
      if (hit) {
        this.metrics.increment('cacheHits');
        return { ...hit.output, provider: hit.provider, model: hit.model, tokens: { prompt: 0, completion: 0 }, cached: true };
      }
      this.metrics.increment('cacheMisses');
    }

    const estimate = this.inner.estimateTokens(input);
    const reservation = await this.ledger.reserve(tenantId, estimate, this.options.dailyTokenBudget);
    if (!reservation) {
      this.metrics.increment('budgetRefusals');
      if (this.options.budgetFallback) {
        this.metrics.increment('fallbacks');
        return this.options.budgetFallback.analyze(input, options);
      }
      throw new AiError(
        'BUDGET_EXCEEDED',
        `tenant ${tenantId}: the daily budget of ${this.options.dailyTokenBudget} tokens cannot cover this call (about ${estimate} tokens)`,
        { provider: this.provider },
      );
    }

    let result: AnalysisResult;
    try {
      result = await this.inner.analyze(input, options);
    } catch (error) {
      const spent = isAiError(error) && error.tokens ? error.tokens.prompt + error.tokens.completion : 0;
      await this.settleQuietly(reservation, spent);
      throw error;
    }
    await this.settleQuietly(reservation, result.tokens.prompt + result.tokens.completion);

    const maker = this.providers.find((p) => p.provider === result.provider && p.model === result.model);
    if (this.cache && maker) {
      // The answer is paid for: losing its cache row costs a future call, failing here would
      // make the consumer retry and pay for this one again.
      await this.cache.put(maker.cacheKey(input), result).catch((error: unknown) => {
        this.options.logger?.warn({ err: error }, 'could not store an LLM answer in the response cache');
      });
    }
    return result;
  }

  // Same reasoning as the cache write: a ledger failure after the call must not fail a paid-for
  // analysis. The reservation then stays held (the tenant loses headroom, never gains it).
  private async settleQuietly(reservation: Parameters<TokenLedger['settle']>[0], spent: number): Promise<void> {
    await this.ledger.settle(reservation, spent).catch((error: unknown) => {
      this.options.logger?.error({ err: error, ...reservation, spent }, 'could not settle a token reservation');
    });
  }
}
