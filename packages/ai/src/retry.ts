import { isTransientAiError, type AiError } from './errors.ts';

/** How a provider is retried before the chain falls back to the next one. */
export interface RetryPolicy {
  /** Calls per provider, the first included. Default 3. */
  maxAttempts?: number;
  /** Backoff before the first retry; doubles each time. Default 500 ms. */
  baseDelayMs?: number;
  /** Backoff never exceeds this. Default 8,000 ms. */
  maxDelayMs?: number;
  /**
   * The longest `Retry-After` we wait for. A provider that asks for more is given up on at once
   * (the next provider, or the consumer's own retry tiers, take over). Default 30,000 ms.
   */
  maxRetryAfterMs?: number;
  /** Source of jitter in [0, 1); tests make it fixed. Default `Math.random`. */
  random?: () => number;
}

export const defaultRetryPolicy: Required<RetryPolicy> = {
  maxAttempts: 3,
  baseDelayMs: 500,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 30_000,
  random: Math.random,
};

/**
 * The delay before retry number `retry` (1 for the first retry): exponential, capped, with
 * "equal jitter" (half fixed, half random) so workers that failed together do not retry together,
 * yet none retries at once.
 */
export function backoffDelay(retry: number, policy: Required<RetryPolicy>): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * policy.random());
}

/**
 * The wait a 429/503 asks for, in ms, from `retry-after-ms` (OpenAI's) or `Retry-After` (RFC 9110:
 * delay-seconds or an HTTP-date). `undefined` when absent or unreadable; never negative.
 */
export function parseRetryAfter(headers: { get(name: string): string | null } | undefined, now: number = Date.now()): number | undefined {
  if (!headers) return undefined;
  const ms = headers.get('retry-after-ms');
  if (ms !== null && /^\s*\d+(\.\d+)?\s*$/.test(ms)) return Math.ceil(Number(ms));
  const value = headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Calls `call` until it succeeds, fails for good, or has been called `policy.maxAttempts` times.
 * Transient {@link AiError}s are retried after the provider's `Retry-After` if it sent one, else
 * after {@link backoffDelay}; a `Retry-After` beyond `maxRetryAfterMs` ends the retries at once.
 */
export async function retryTransient<T>(
  call: () => Promise<T>,
  policy: Required<RetryPolicy>,
  options: { signal?: AbortSignal | undefined; onRetry?: (error: AiError, delayMs: number) => void } = {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!isTransientAiError(error) || attempt >= policy.maxAttempts) throw error;
      const delay = error.retryAfterMs ?? backoffDelay(attempt, policy);
      // Retrying before the provider said it would take calls again only earns another 429.
      if (delay > policy.maxRetryAfterMs) throw error;
      options.onRetry?.(error, delay);
      await sleep(delay, options.signal);
    }
  }
}
