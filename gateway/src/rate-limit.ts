import type { ApolloServerPlugin, GraphQLRequestContextDidResolveOperation } from '@apollo/server';
import { GraphQLError, Kind } from 'graphql';
import { createHash } from 'node:crypto';
import type { Logger } from '@tributary/core';
import { externalCounter } from '@tributary/core/metrics';
import { Redis } from 'ioredis';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { LimitCode } from './limits.ts';

/**
 * Counts the uploads of each key (`tenant:user`) against the per-minute limit, as a token bucket:
 * a key starts with `perMinute` tokens (the burst), each upload takes one, and tokens come back
 * continuously at `perMinute` per 60 s, up to `perMinute`. So in any span of `t` ms a key gets at
 * most `perMinute + perMinute * t / 60 000` uploads, whichever store counts. One interface, two
 * stores with the same arithmetic: {@link MemoryRateLimiter} (one process) and
 * {@link RedisRateLimiter} (shared by every gateway process and cluster worker). See
 * {@link createRateLimiter}.
 */
export interface RateLimiter {
  /**
   * Take `n` tokens (default 1) for `key` in one operation; resolves to 0 when allowed, else the
   * ms until `n` tokens will be there (the retry-after). A refused take uses up nothing.
   * @throws RateLimitStoreError when the store cannot be asked (Redis unreachable, timed out)
   */
  take(key: string, n?: number): Promise<number>;
  close(): Promise<void>;
}

/** The rate limit's store did not answer: the caller decides to fail open or closed. */
export class RateLimitStoreError extends Error {
  override readonly name = 'RateLimitStoreError';
  readonly code = 'RATE_LIMIT_STORE_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

const MINUTE_MS = 60_000;

/**
 * The {@link RateLimiter} token bucket in this process's memory: N gateway processes allow N
 * times the limit. Buckets idle for a minute (full again) are dropped past 100 000 keys.
 */
export class MemoryRateLimiter implements RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly now: () => number;

  /**
   * @param perMinute the bucket's size and its refill per minute
   * @param options.now the clock, in ms (default `Date.now`)
   */
  constructor(
    private readonly perMinute: number,
    options: { now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  async take(key: string, n = 1): Promise<number> {
    const now = this.now();
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    // The same arithmetic as TAKE below, so both stores answer alike. A clock that steps back refills nothing.
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + (Math.max(0, now - bucket.at) * this.perMinute) / MINUTE_MS);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (this.buckets.size > 100_000) this.evict(now);
    if (bucket.tokens >= n) {
      bucket.tokens -= n;
      return 0;
    }
    return Math.ceil(((n - bucket.tokens) * MINUTE_MS) / this.perMinute);
  }

  async close(): Promise<void> {}

  private evict(now: number): void {
    for (const [key, bucket] of this.buckets) if (now - bucket.at > MINUTE_MS) this.buckets.delete(key);
  }
}

/**
 * MemoryRateLimiter.take in one script, so a take is atomic across gateway processes. The clock is
 * the Redis server's TIME: gateways whose clocks disagree still share one bucket. A full bucket
 * needs no key, so the hash expires when it would be full again. KEYS[1] the bucket (a hash of
 * `tokens` and `at`, ms); ARGV: perMinute, n. Returns 0 or the ms to wait.
 */
const TAKE = `local per_minute = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or per_minute
local at = tonumber(bucket[2]) or now
tokens = math.min(per_minute, tokens + (math.max(0, now - at) * per_minute) / 60000)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = math.ceil(((n - tokens) * 60000) / per_minute)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(((per_minute - tokens) * 60000) / per_minute)))
return wait`;
const TAKE_SHA = createHash('sha1').update(TAKE).digest('hex');

/** Longest a rate-limit command may take before the request fails over (REDIS_URL). */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

/**
 * The {@link RateLimiter} token bucket in Redis (one Lua script over ioredis, run on the server
 * with the server's clock): one hash per key, shared by every process using the same Redis and
 * prefix. A Redis that is down or slow fails the take within {@link REDIS_COMMAND_TIMEOUT_MS}
 * (no offline queue, no retries).
 */
export class RedisRateLimiter implements RateLimiter {
  /**
   * @param perMinute the bucket's size and its refill per minute
   * @param keyPrefix Redis keys are `<keyPrefix>:<key>`, hashes of `tokens` and `at` (ms, Redis time).
   */
  constructor(
    private readonly redis: Redis,
    private readonly perMinute: number,
    private readonly keyPrefix: string,
  ) {}

  /** An ioredis client that never queues a command while disconnected. */
  static client(url: string): Redis {
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

  async take(key: string, n = 1): Promise<number> {
    let wait: unknown;
    try {
      wait = await this.evalTake(`${this.keyPrefix}:${key}`, n);
    } catch (error) {
      throw new RateLimitStoreError(`the rate limit's Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    if (typeof wait !== 'number') throw new RateLimitStoreError(`the rate limit's Redis answered ${JSON.stringify(wait)}, not a number of ms`);
    return wait;
  }

  async close(): Promise<void> {
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => this.redis.disconnect());
    else this.redis.disconnect();
  }

  private async evalTake(redisKey: string, n: number): Promise<unknown> {
    try {
      return await this.redis.evalsha(TAKE_SHA, 1, redisKey, this.perMinute, n);
    } catch (error) {
      // A restarted or flushed Redis has forgotten the script: send it whole, once.
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
      return await this.redis.eval(TAKE, 1, redisKey, this.perMinute, n);
    }
  }
}

const rateLimitMetrics = {
  storeErrors: externalCounter(
    'tributary_gateway_rate_limit_store_errors_total',
    'Uploads the rate limit could not check because its Redis was unreachable or failed, by what was done (allowed, denied: RATE_LIMIT_ON_REDIS_ERROR)',
    ['outcome'],
  ),
};

/**
 * The upload rate limiter the configuration asks for: a token bucket of
 * UPLOAD_RATE_LIMIT_PER_MINUTE (default 60) per user, refilled continuously; in Redis with
 * REDIS_URL (keys `<TRIBUTARY_NAMESPACE>:upload-bucket:<tenant>:<user>`; connecting now, but
 * starting without it: RATE_LIMIT_ON_REDIS_ERROR applies until it answers), else in memory.
 */
export async function createRateLimiter(config: GatewayConfig, logger: Logger): Promise<RateLimiter> {
  if (!config.REDIS_URL) return new MemoryRateLimiter(config.UPLOAD_RATE_LIMIT_PER_MINUTE);
  const redis = RedisRateLimiter.client(config.REDIS_URL);
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
  // Not `upload-rate`, the fixed-window counters' (strings) of earlier versions: during a rolling
  // upgrade a hash under the same name would fail every take of both versions with WRONGTYPE.
  return new RedisRateLimiter(redis, config.UPLOAD_RATE_LIMIT_PER_MINUTE, `${config.TRIBUTARY_NAMESPACE}:upload-bucket`);
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
 * The per-user upload rate limit, as an Apollo Server plugin: each of `fields` (root fields of a
 * mutation, UPLOAD_RATE_LIMIT_FIELDS) in a request takes a token, and over the limit the request
 * is refused with RATE_LIMITED (HTTP 429, with `retryAfterSeconds`: when the tokens it asked for
 * will be there). When the limiter's store fails, `onStoreError` (default `allow`) says what to
 * do: `allow` lets the upload through, `deny` refuses it with SERVICE_UNAVAILABLE (HTTP 503);
 * either way it is counted and logged (at most once per 10 s).
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
            if (!(error instanceof RateLimitStoreError || (error as { name?: unknown } | null)?.name === 'RateLimitStoreError')) throw error;
            const outcome = onStoreError === 'allow' ? 'allowed' : 'denied';
            rateLimitMetrics.storeErrors.inc({ outcome }, n);
            warn({ err: error, outcome }, `upload rate limit unavailable; uploads ${outcome} (RATE_LIMIT_ON_REDIS_ERROR=${onStoreError})`);
            if (onStoreError === 'allow') return;
            throw new GraphQLError('upload rate limit unavailable; retry later', {
              extensions: { code: LimitCode.SERVICE_UNAVAILABLE, retryAfterSeconds: 1, http: { status: 503 } },
            });
          }
          if (waitMs > 0) {
            throw new GraphQLError(`upload rate limit exceeded; retry in ${Math.ceil(waitMs / 1000)} s`, {
              extensions: { code: LimitCode.RATE_LIMITED, retryAfterSeconds: Math.ceil(waitMs / 1000), http: { status: 429 } },
            });
          }
        },
      };
    },
  };
}
