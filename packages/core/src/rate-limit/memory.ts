import { countsNothing, neverFits, windowWait, type Admission, type RateLimitStore, type WindowLimits } from './window.ts';

interface Call {
  at: number;
  cost: number;
  id: string;
}

/** Keys past which idle ones are dropped (a key per user must not grow the map for ever). */
const MAX_KEYS = 100_000;

/**
 * The {@link RateLimitStore} in this process's memory: for one process that is the whole
 * deployment (embedded PGlite, one gateway), else each process counts alone and N processes
 * admit N times the limit. Keys whose window and pause have passed are dropped past 100,000 keys.
 */
export class MemoryRateLimitStore implements RateLimitStore {
  private readonly calls = new Map<string, { log: Call[]; windowMs: number }>();
  private readonly pauses = new Map<string, number>();
  private readonly now: () => number;
  private counter = 0;

  /**
   * @param options.now the clock, in ms (default `performance.now`: monotonic, so a wall clock
   * stepped back or forward neither stretches nor shrinks the window, and finer than a
   * millisecond, so a call admitted the moment the oldest leaves is a full window after it)
   */
  constructor(options: { now?: () => number } = {}) {
    this.now = options.now ?? (() => performance.now());
  }

  async tryAcquire(key: string, cost: number, limits: WindowLimits): Promise<Admission> {
    const now = this.now();
    const paused = (this.pauses.get(key) ?? 0) - now;
    if (paused > 0) return { ok: false, waitMs: paused };
    if (countsNothing(limits)) return { ok: true };
    if (neverFits(cost, limits)) return { ok: false, waitMs: Infinity };
    const log = (this.calls.get(key)?.log ?? []).filter((c) => c.at > now - limits.windowMs);
    if (this.calls.size >= MAX_KEYS) this.evict(now);
    this.calls.set(key, { log, windowMs: limits.windowMs });
    const wait = windowWait(log, now, cost, limits);
    if (wait > 0) return { ok: false, waitMs: Math.ceil(wait) };
    const id = String(++this.counter);
    log.push({ at: now, cost, id });
    return { ok: true, call: id };
  }

  async finish(key: string, call: string): Promise<void> {
    const log = this.calls.get(key)?.log ?? [];
    const entry = log.find((c) => c.id === call);
    if (!entry) return;
    entry.at = Math.max(entry.at, this.now());
    // The log stays in time order, as windowWait reads it.
    log.sort((a, b) => a.at - b.at);
  }

  async pause(key: string, ms: number): Promise<void> {
    this.pauses.set(key, Math.max(this.pauses.get(key) ?? 0, this.now() + ms));
  }

  async close(): Promise<void> {}

  private evict(now: number): void {
    for (const [key, { log, windowMs }] of this.calls) if (log.every((c) => c.at <= now - windowMs)) this.calls.delete(key);
    for (const [key, until] of this.pauses) if (until <= now) this.pauses.delete(key);
  }
}
