import type { ApolloServerPlugin, GraphQLRequestContextDidResolveOperation } from '@apollo/server';
import { GraphQLError, Kind } from 'graphql';
import type { Logger } from '@tributary/core';
import { externalCounter } from '@tributary/core/metrics';
import { isRateLimitStoreError, MemoryRateLimitStore, RedisRateLimitStore, windowLimiter, type RateLimiter, type WindowLimits } from '@tributary/core/rate-limit';
import { Redis } from 'ioredis';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { LimitCode } from './limits.ts';

/** Longest a rate-limit command may take before the request fails over (REDIS_URL). */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

/**
 * An ioredis client for the upload rate limit that never queues a command while disconnected and
 * fails one within {@link REDIS_COMMAND_TIMEOUT_MS} (no retries): a down or slow Redis must not
 * hold uploads, RATE_LIMIT_ON_REDIS_ERROR decides them at once.
 */
export function rateLimitRedisClient(url: string): Redis {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 2_000,
    // Reconnect soon after Redis comes back, but never stop trying.
    retryStrategy: (times) => Math.min(times * 100, 1_000),
  });
  // Each failed take says so (see uploadRateLimit); ioredis would print every failed reconnect.
  redis.on('error', () => {});
  return redis;
}

/** UPLOAD_RATE_LIMIT_PER_MINUTE as a sliding window: at most that many uploads in any 60 s. */
export function uploadWindow(perMinute: number): WindowLimits {
  return { requests: 0, cost: perMinute, windowMs: 60_000 };
}

const rateLimitMetrics = {
  storeErrors: externalCounter(
    'tributary_gateway_rate_limit_store_errors_total',
    'Uploads the rate limit could not check because its Redis was unreachable or failed, by what was done (allowed, denied: RATE_LIMIT_ON_REDIS_ERROR)',
    ['outcome'],
  ),
};

/**
 * The upload rate limiter the configuration asks for: at most UPLOAD_RATE_LIMIT_PER_MINUTE
 * (default 60) uploads per user in any 60 s (a sliding window of @tributary/core/rate-limit); in
 * Redis with REDIS_URL (a sorted set `<TRIBUTARY_NAMESPACE>:upload-window:<tenant>:<user>:calls`;
 * connecting now, but starting without it: RATE_LIMIT_ON_REDIS_ERROR applies until it answers),
 * else in this process's memory.
 */
export async function createRateLimiter(config: GatewayConfig, logger: Logger): Promise<RateLimiter> {
  const limits = uploadWindow(config.UPLOAD_RATE_LIMIT_PER_MINUTE);
  if (!config.REDIS_URL) return windowLimiter(new MemoryRateLimitStore(), limits);
  const redis = rateLimitRedisClient(config.REDIS_URL);
  // One line when the connection goes and one when it is back; failed takes are logged by the plugin.
  let down = false;
  redis.on('ready', () => {
    if (down) logger.info('rate limit Redis reachable again');
    down = false;
  });
  redis.on('reconnecting', () => {
    if (!down) logger.warn({ onRedisError: config.RATE_LIMIT_ON_REDIS_ERROR }, 'rate limit Redis unreachable; reconnecting');
    down = true;
  });
  // Starting without Redis is allowed: 'reconnecting' above has logged it, and ioredis keeps trying.
  await redis.connect().catch(() => {});
  // Neither `upload-bucket` (the token bucket's hashes) nor `upload-rate` (the fixed-window
  // counters' strings) of earlier versions: during a rolling upgrade a sorted set under the same
  // name would fail every take of both versions with WRONGTYPE.
  return windowLimiter(new RedisRateLimitStore(redis, `${config.TRIBUTARY_NAMESPACE}:upload-window`), limits);
}

/** Logs at most one line per `intervalMs`, saying how many it left out. */
function throttledWarn(logger: Logger, intervalMs: number) {
  let last = -Infinity;
  let suppressed = 0;
  return (fields: Record<string, unknown>, message: string) => {
    const now = Date.now();
    if (now - last < intervalMs) {
      suppressed++;
      return;
    }
    logger.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, message);
    last = now;
    suppressed = 0;
  };
}

/** Counts the rate-limited root fields of a mutation (aliases would otherwise multiply one request). */
function uploads(request: GraphQLRequestContextDidResolveOperation<GatewayContext>, fields: ReadonlySet<string>): number {
  const operation = request.operation;
  if (!operation || operation.operation !== 'mutation') return 0;
  return operation.selectionSet.selections.filter((s) => s.kind === Kind.FIELD && fields.has(s.name.value)).length;
}

/**
 * RATE_LIMITED (HTTP 429) for a request `waitMs` short of room: `retryAfterSeconds` says when
 * enough of the user's oldest uploads leave the window; none when the request alone asks for
 * more uploads than the limit, which no wait would admit.
 */
function rateLimited(waitMs: number): GraphQLError {
  if (!Number.isFinite(waitMs)) {
    return new GraphQLError('upload rate limit exceeded: this request alone makes more uploads than the limit allows per minute', {
      extensions: { code: LimitCode.RATE_LIMITED, http: { status: 429 } },
    });
  }
  const seconds = Math.ceil(waitMs / 1000);
  return new GraphQLError(`upload rate limit exceeded; retry in ${seconds} s`, {
    extensions: { code: LimitCode.RATE_LIMITED, retryAfterSeconds: seconds, http: { status: 429 } },
  });
}

/**
 * The per-user upload rate limit, as an Apollo Server plugin: each of `fields` (root fields of a
 * mutation, UPLOAD_RATE_LIMIT_FIELDS) in a request counts one upload, all of a request's taken at
 * once or none, and over the limit the request is refused with RATE_LIMITED (HTTP 429, with
 * `retryAfterSeconds`: when enough of the user's oldest uploads have left the window for it).
 * When the limiter's store fails, `onStoreError` (default `allow`) says what to do: `allow` lets
 * the upload through, `deny` refuses it with SERVICE_UNAVAILABLE (HTTP 503); either way it is
 * counted and logged (at most once per 10 s).
 */
export function uploadRateLimit(limiter: RateLimiter, options: { fields: readonly string[]; onStoreError?: 'allow' | 'deny'; logger?: Logger }): ApolloServerPlugin<GatewayContext> {
  const fields = new Set(options.fields);
  const onStoreError = options.onStoreError ?? 'allow';
  const warn = options.logger ? throttledWarn(options.logger, 10_000) : () => {};
  return {
    async requestDidStart() {
      return {
        async didResolveOperation(request) {
          const n = uploads(request, fields);
          if (n === 0) return;
          const key = `${request.contextValue.tenantId}:${request.contextValue.userId ?? ''}`;
          let waitMs: number;
          try {
            waitMs = await limiter.take(key, n);
          } catch (error) {
            if (!isRateLimitStoreError(error)) throw error;
            const outcome = onStoreError === 'allow' ? 'allowed' : 'denied';
            rateLimitMetrics.storeErrors.inc({ outcome }, n);
            warn({ err: error, outcome }, `upload rate limit unavailable; uploads ${outcome} (RATE_LIMIT_ON_REDIS_ERROR=${onStoreError})`);
            if (onStoreError === 'allow') return;
            throw new GraphQLError('upload rate limit unavailable; retry later', {
              extensions: { code: LimitCode.SERVICE_UNAVAILABLE, retryAfterSeconds: 1, http: { status: 503 } },
            });
          }
          if (waitMs > 0) throw rateLimited(waitMs);
        },
      };
    },
  };
}
