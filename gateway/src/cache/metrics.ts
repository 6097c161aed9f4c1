import { externalCounter } from '@tributary/core/metrics';

/** The cache's counters on /metrics. */
export interface CacheMetrics {
  /** Queries by cache outcome. */
  requests: ReturnType<typeof externalCounter>;
  /** Entries dropped, by cause. */
  invalidations: ReturnType<typeof externalCounter>;
}

/** The cache's counters, created once per name in the registry (every cache of the process shares them). */
export function cacheMetrics(): CacheMetrics {
  return {
    requests: externalCounter('tributary_gateway_cache_requests_total', 'Queries by cache outcome: hit, shared (joined an identical miss in flight), miss, bypass (not cacheable)', ['result']),
    invalidations: externalCounter('tributary_gateway_cache_invalidations_total', 'Cache entries dropped, by cause: event, mutation, expired, evicted', ['cause']),
  };
}
