/** The counters @tributary/ai keeps. All only ever grow (until {@link AiMetrics.reset}). */
export const aiCounterNames = [
  /** Prompt tokens providers billed (chat and embeddings), invalid replies included. */
  'tokensIn',
  /** Completion tokens providers billed. */
  'tokensOut',
  /** Analyses served from the response cache. */
  'cacheHits',
  /** Analyses the cache could not serve. */
  'cacheMisses',
  /** Switches to a fallback: the next provider in a chain, or the offline analyzer over budget. */
  'fallbacks',
  /** Calls the token budget refused. */
  'budgetRefusals',
  /** Provider calls made again after a transient failure (429, 5xx, timeout, invalid reply). */
  'retries',
] as const;
export type AiCounterName = (typeof aiCounterNames)[number];
export type AiMetricsSnapshot = Readonly<Record<AiCounterName, number>>;

/**
 * A dependency-free counter set: the metrics exporter reads {@link snapshot} (or listens to
 * increments) and turns it into whatever format it serves.
 */
export class AiMetrics {
  private readonly counters = Object.fromEntries(aiCounterNames.map((name) => [name, 0])) as Record<AiCounterName, number>;
  private readonly listeners = new Set<(name: AiCounterName, by: number) => void>();

  increment(name: AiCounterName, by = 1): void {
    if (by === 0) return;
    this.counters[name] += by;
    for (const listener of this.listeners) listener(name, by);
  }

  /** The current values, a copy. */
  snapshot(): AiMetricsSnapshot {
    return { ...this.counters };
  }

  /** Calls `listener` on every increment; returns the unsubscribe function. */
  onIncrement(listener: (name: AiCounterName, by: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  reset(): void {
    for (const name of aiCounterNames) this.counters[name] = 0;
  }
}

/** The process-wide counters every component uses unless given its own (tests do). */
export const aiMetrics = new AiMetrics();
