import type { Logger } from '@tributary/core';
import { isTransientAiError, type AiError } from './errors.ts';
import { aiMetrics, type AiMetrics } from './metrics.ts';
import type { LlmProvider } from './provider.ts';
import { defaultRetryPolicy, retryTransient, type RetryPolicy } from './retry.ts';
import type { AnalysisInput, AnalysisResult, AnalyzeOptions } from './types.ts';

export interface ChainOptions {
  /** Retries per provider. Defaults: see {@link RetryPolicy}. */
  retry?: RetryPolicy;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
  logger?: Pick<Logger, 'warn'>;
}

/**
 * Ordered providers behind one {@link LlmProvider}. A transient failure (`RATE_LIMITED`,
 * `PROVIDER_UNAVAILABLE`, `TIMEOUT`) is retried with exponential backoff and jitter, or after the
 * provider's `Retry-After` when it sent one, up to `maxAttempts` calls; then the next provider is
 * tried. An unrecoverable failure (`INVALID_OUTPUT`, `PROVIDER_REJECTED`, …) ends the chain at once:
 * another provider would not fix the request. When every provider failed, the last error is thrown
 * (transient, so the consumer's retry tiers try again later).
 *
 * `provider`, `model`, `estimateTokens` and `cacheKey` are the first provider's.
 */
export class ChainAnalyzer implements LlmProvider {
  readonly provider: string;
  readonly model: string;
  private readonly policy: Required<RetryPolicy>;
  private readonly metrics: AiMetrics;

  constructor(
    readonly providers: readonly LlmProvider[],
    private readonly options: ChainOptions = {},
  ) {
    const first = providers[0];
    if (!first) throw new Error('ChainAnalyzer needs at least one provider');
    this.provider = first.provider;
    this.model = first.model;
    this.policy = { ...defaultRetryPolicy, ...options.retry };
    this.metrics = options.metrics ?? aiMetrics;
  }

  estimateTokens(input: AnalysisInput): number {
    return Math.max(...this.providers.map((p) => p.estimateTokens(input)));
  }

  cacheKey(input: AnalysisInput): string {
    return this.providers[0]!.cacheKey(input);
  }

  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    let last: AiError | undefined;
    for (const [index, provider] of this.providers.entries()) {
      if (index > 0) {
        this.metrics.increment('fallbacks');
        this.options.logger?.warn({ from: last?.provider, to: provider.provider, code: last?.code }, 'AI provider failed, falling back to the next one');
      }
      try {
        return await this.withRetries(provider, input, options);
      } catch (error) {
        if (!isTransientAiError(error)) throw error;
        last = error;
      }
    }
    throw last!;
  }

  private withRetries(provider: LlmProvider, input: AnalysisInput, options: AnalyzeOptions): Promise<AnalysisResult> {
    return retryTransient(() => provider.analyze(input, options), this.policy, {
      signal: options.signal,
      onRetry: () => this.metrics.increment('retries'),
    });
  }
}
