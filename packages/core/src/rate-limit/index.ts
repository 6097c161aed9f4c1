/**
 * One rate limiter: a sliding window (at most N admissions, or N units of cost, in any window of
 * W ms) over a store shared by the processes it limits. `@tributary/core/rate-limit`.
 */
export {
  countsNothing,
  isRateLimitStoreError,
  neverFits,
  RateLimitStoreError,
  windowLimiter,
  windowWait,
  type Admission,
  type RateLimiter,
  type RateLimitStore,
  type WindowLimits,
} from './window.ts';
export { MemoryRateLimitStore } from './memory.ts';
export { rateLimitTablesMigration, SqlRateLimitStore, type SqlRateLimitTables } from './sql.ts';
export { RedisRateLimitStore, type RedisLike } from './redis.ts';
