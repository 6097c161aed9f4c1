import type { RateLimitStore, WindowLimits } from '@tributary/core/rate-limit';
import type { LimitFunction } from 'p-limit';
import { AiError, isAiError } from './errors.ts';
import type { LlmProvider } from './provider.ts';
import { sleep } from './retry.ts';
import type { AnalysisInput, AnalysisResult, AnalyzeOptions } from './types.ts';

/** A provider's rate limits, over any sliding window of {@link RateLimits.windowMs}. */
export interface RateLimits {
  /** Calls per window; unset: no limit. */
  requests?: number;
  /** Tokens per window (each call counts its high estimate, as providers count `max_tokens`); unset: no limit. */
  tokens?: number;
  /** Default 60,000 ms (the `…_PER_MINUTE` settings). */
  windowMs?: number;
}

/**
 * Added to a wait before asking again: a timer may fire a little before the store's clock has
 * moved on by as much (the stores' waits are exact), and asking early only costs a round trip.
 */
const SLACK_MS = 5;

export interface LimitedProviderOptions {
  /** Calls in flight at once in this process (shared by the providers given the same function). */
  slots?: LimitFunction;
  /**
   * The provider's rate limits (none: only the pauses 429s set), counted in `store` (from
   * `@tributary/core/rate-limit`) under the provider's name, each call costing its tokens.
   */
  rate?: { limits?: RateLimits; store: RateLimitStore };
}

/**
 * An {@link LlmProvider} within its limits. A call first takes one of the process's call slots
 * (so only the HTTP call holds one: everything before and after it, in every layer, runs
 * outside), then waits for room in the provider's shared rate window; it waits, it does not
 * fail. A 429 from the provider pauses the provider for every process sharing the store, for its
 * `Retry-After` (the chain's retry then waits it out too).
 */
export class LimitedProvider implements LlmProvider {
  readonly provider: string;
  readonly model: string;
  private readonly limits: WindowLimits;

  constructor(
    private readonly inner: LlmProvider,
    private readonly options: LimitedProviderOptions,
  ) {
    this.provider = inner.provider;
    this.model = inner.model;
    const limits = options.rate?.limits ?? {};
    this.limits = { requests: limits.requests ?? 0, cost: limits.tokens ?? 0, windowMs: limits.windowMs ?? 60_000 };
  }

  estimateTokens(input: AnalysisInput): number {
    return this.inner.estimateTokens(input);
  }

  cacheKey(input: AnalysisInput): string {
    return this.inner.cacheKey(input);
  }

  analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    const call = () => this.call(input, options);
    return this.options.slots ? this.options.slots(call) : call();
  }

  private async call(input: AnalysisInput, options: AnalyzeOptions): Promise<AnalysisResult> {
    const store = this.options.rate?.store;
    let call: string | undefined;
    if (store) {
      // Without limits this only looks for a pause another worker's 429 set.
      const tokens = this.limits.cost > 0 ? this.inner.estimateTokens(input) : 0;
      if (this.limits.cost > 0 && tokens > this.limits.cost) {
        throw new AiError('PROVIDER_REJECTED', `${this.provider}: one call needs about ${tokens} tokens, more than its limit of ${this.limits.cost} per window`, { provider: this.provider });
      }
      for (;;) {
        const admission = await store.tryAcquire(this.provider, tokens, this.limits);
        if (admission.ok) {
          call = admission.call;
          break;
        }
        await sleep(admission.waitMs + SLACK_MS, options.signal);
      }
    }
    try {
      return await this.inner.analyze(input, options);
    } catch (error) {
      if (store && isAiError(error) && error.code === 'RATE_LIMITED' && error.retryAfterMs) await store.pause(this.provider, error.retryAfterMs).catch(() => {});
      throw error;
    } finally {
      // Best effort: a call whose end is not recorded still counts from its admission.
      if (store && call !== undefined) await store.finish(this.provider, call).catch(() => {});
    }
  }
}
