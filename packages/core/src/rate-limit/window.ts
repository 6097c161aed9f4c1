import { TributaryError } from '../errors.ts';

/**
 * A sliding-window limit: in any window of `windowMs` a key is admitted at most `requests` times
 * and at most `cost` units (the sum of the admissions' costs). Unlike a token bucket, which lets a
 * full bucket's burst and its refill through within one window (up to twice the limit), this
 * holds in every window, wherever it starts: what a provider's `…_PER_MINUTE` limits require.
 */
export interface WindowLimits {
  /** Admissions per window; 0: no limit. */
  requests: number;
  /** Units of cost per window (tokens, uploads); 0: no limit. */
  cost: number;
  /** The window's length, in ms (60,000 for a `…_PER_MINUTE` setting). */
  windowMs: number;
}

/**
 * Admitted (`call` names the admission, for {@link RateLimitStore.finish}; absent when nothing is
 * counted), or how long to wait: the ms until enough of the oldest admissions (or a pause) have
 * left the window, on the store's clock; `Infinity` when the cost alone exceeds the limit.
 */
export type Admission = { ok: true; call?: string } | { ok: false; waitMs: number };

/**
 * Where the admissions of every process sharing a limit are counted, so the limit holds for all
 * of them together: {@link MemoryRateLimitStore} (one process), {@link SqlRateLimitStore}
 * (PostgreSQL or PGlite), {@link RedisRateLimitStore}. Each keeps a log of the window's
 * admissions per key and decides on one clock (its own: the database's, Redis's).
 */
export interface RateLimitStore {
  /**
   * Admit one call of `cost` for `key` if the window before now holds room for it under
   * `limits`, and no pause is on; else how long to wait before asking again (a refusal takes
   * nothing). Atomic across processes: two callers racing for the last room cannot both get it.
   * @throws RateLimitStoreError when a remote store cannot be asked (Redis unreachable, timed out)
   */
  tryAcquire(key: string, cost: number, limits: WindowLimits): Promise<Admission>;
  /**
   * The admitted call has ended: it now counts from this moment. A remote service counts a call
   * when it receives it, which is after its admission by however long the request took to send;
   * from its end, the call's window certainly covers the service's, so no window the service
   * sees holds more than the limit.
   */
  finish(key: string, call: string): Promise<void>;
  /** No admission for `key` in any process until `ms` from now (a 429's `Retry-After`). */
  pause(key: string, ms: number): Promise<void>;
  close?(): Promise<void>;
}

/** The store could not be asked: the caller decides whether to fail open or closed. */
export class RateLimitStoreError extends TributaryError {
  override name = 'RateLimitStoreError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('RATE_LIMIT_STORE_UNAVAILABLE', message, options);
  }
}

/** Whether `error` is a {@link RateLimitStoreError}, from this copy of the package or another. */
export function isRateLimitStoreError(error: unknown): error is RateLimitStoreError {
  return error instanceof RateLimitStoreError || (error as { name?: unknown } | null)?.name === 'RateLimitStoreError';
}

/** Whether a call of `cost` can never fit `limits`, however empty the window: it waits forever. */
export function neverFits(cost: number, limits: WindowLimits): boolean {
  return limits.cost > 0 && cost > limits.cost;
}

/** Whether `limits` count nothing (only a pause can then hold a call). */
export function countsNothing(limits: WindowLimits): boolean {
  return limits.requests <= 0 && limits.cost <= 0;
}

/**
 * The wait a sliding-window log implies: `calls` (oldest first, times in ms on the store's clock)
 * are those within the window before `now`; a call leaves it once `at + windowMs <= now`. 0 when
 * a call of `cost` fits now, else the ms until enough of the oldest have left.
 */
export function windowWait(calls: readonly { at: number; cost: number }[], now: number, cost: number, limits: WindowLimits): number {
  let wait = 0;
  if (limits.requests > 0 && calls.length + 1 > limits.requests) {
    // The (n - limit + 1)-th oldest must leave the window first.
    wait = calls[calls.length - limits.requests]!.at + limits.windowMs - now;
  }
  if (limits.cost > 0) {
    let held = calls.reduce((sum, c) => sum + c.cost, 0);
    for (const call of calls) {
      if (held + cost <= limits.cost) break;
      held -= call.cost;
      wait = Math.max(wait, call.at + limits.windowMs - now);
    }
  }
  return Math.max(0, wait);
}

/** A store with the one limit a caller counts against, admitting or saying how long to wait. */
export interface RateLimiter {
  /**
   * Admit `cost` (default 1) for `key` now: 0 when admitted, else the ms to wait (`Infinity`
   * when `cost` exceeds the limit). A refusal takes nothing.
   * @throws RateLimitStoreError as {@link RateLimitStore.tryAcquire}
   */
  take(key: string, cost?: number): Promise<number>;
  close(): Promise<void>;
}

/** The {@link RateLimiter} of `limits` counted in `store` (closing it closes the store). */
export function windowLimiter(store: RateLimitStore, limits: WindowLimits): RateLimiter {
  return {
    take: async (key, cost = 1) => {
      const admission = await store.tryAcquire(key, cost, limits);
      return admission.ok ? 0 : admission.waitMs;
    },
    close: async () => {
      await store.close?.();
    },
  };
}
