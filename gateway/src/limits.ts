import type { ApolloServerPlugin, GraphQLRequestContextDidResolveOperation } from '@apollo/server';
import { costLimitRule } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesRule } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthRule } from '@escape.tech/graphql-armor-max-depth';
import { GraphQLError, Kind, type GraphQLFormattedError, type GraphQLSchema, type ValidationContext, type ValidationRule } from 'graphql';
import type { Logger } from '@tributary/core';
import { externalCounter } from '@tributary/core/metrics';
import { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';

/** Codes of refused operations, on `extensions.code`. */
export const LimitCode = {
  QUERY_TOO_DEEP: 'QUERY_TOO_DEEP',
  TOO_MANY_ALIASES: 'TOO_MANY_ALIASES',
  QUERY_TOO_COSTLY: 'QUERY_TOO_COSTLY',
  RATE_LIMITED: 'RATE_LIMITED',
  /** The upload rate limit could not be checked (its Redis is down) and RATE_LIMIT_ON_REDIS_ERROR=deny. */
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
} as const;
const limitCodes = new Set<string>(Object.values(LimitCode));

/** Report an armor rejection as a validation error with our code (instead of throwing). */
const reject = (code: string) => [(context: ValidationContext | null, error: GraphQLError) => context?.reportError(new GraphQLError(error.message.replace(/^Syntax Error: /, ''), { extensions: { code } }))];

/** Depth, alias and cost limits (graphql-armor), as validation rules for Apollo Server. */
export function limitRules(config: GatewayConfig): ValidationRule[] {
  const common = { propagateOnRejection: false, exposeLimits: true } as const;
  return [
    maxDepthRule({ ...common, n: config.QUERY_MAX_DEPTH, flattenFragments: true, onReject: reject(LimitCode.QUERY_TOO_DEEP) }) as unknown as ValidationRule,
    maxAliasesRule({ ...common, n: config.QUERY_MAX_ALIASES, onReject: reject(LimitCode.TOO_MANY_ALIASES) }) as unknown as ValidationRule,
    costLimitRule({ ...common, maxCost: config.QUERY_MAX_COST, onReject: reject(LimitCode.QUERY_TOO_COSTLY) }) as unknown as ValidationRule,
  ];
}

/**
 * Apollo Server stamps every validation error GRAPHQL_VALIDATION_FAILED; restore the limit codes
 * so clients can tell "too deep" from "no such field". In production, internal errors say no
 * more than that.
 */
export function formatError(production: boolean) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const original = (error as { originalError?: { extensions?: { code?: unknown } } } | undefined)?.originalError;
    const code = original?.extensions?.code;
    if (typeof code === 'string' && limitCodes.has(code)) return { ...formatted, extensions: { ...formatted.extensions, code } };
    if (!production) return formatted;
    if (formatted.extensions?.code === 'INTERNAL_SERVER_ERROR') {
      return { message: 'internal error', ...(formatted.path ? { path: formatted.path } : {}), extensions: { code: 'INTERNAL_SERVER_ERROR' } };
    }
    // Subgraph errors pass through the gateway: never let one carry a stack trace out.
    if (formatted.extensions && 'stacktrace' in formatted.extensions) {
      const { stacktrace: _stack, ...extensions } = formatted.extensions;
      return { ...formatted, extensions };
    }
    return formatted;
  };
}

/**
 * Counts the uploads of each key (`tenant:user`) against the per-minute limit. One interface,
 * two stores: {@link MemoryRateLimiter} (one process) and {@link RedisRateLimiter} (shared by
 * every gateway process and cluster worker). See {@link createRateLimiter}.
 */
export interface RateLimiter {
  /**
   * Take `n` points for `key` in one operation; resolves to 0 when allowed, else the ms until
   * they will be there. A refused take uses up nothing.
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

/** Per-key token bucket: `perMinute` per minute, refilled continuously. In memory, per gateway process. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly perMinute: number) {}

  async take(key: string, n = 1, now = Date.now()): Promise<number> {
    const bucket = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    bucket.tokens = Math.min(this.perMinute, bucket.tokens + ((now - bucket.at) * this.perMinute) / 60_000);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (this.buckets.size > 100_000) this.evict(now);
    if (bucket.tokens >= n) {
      bucket.tokens -= n;
      return 0;
    }
    return Math.ceil(((n - bucket.tokens) * 60_000) / this.perMinute);
  }

  async close(): Promise<void> {}

  private evict(now: number): void {
    for (const [key, bucket] of this.buckets) if (now - bucket.at > 60_000) this.buckets.delete(key);
  }
}

/**
 * rate-limiter-flexible's increment, changed so that a refused take is given back in the same
 * script: a request of 6 uploads against a limit of 5 must not use up the user's minute (as the
 * memory bucket takes nothing it refuses). KEYS[1] the counter; ARGV: points, window (s), limit.
 */
const TAKE_IF_FITS = `redis.call('set', KEYS[1], 0, 'EX', ARGV[2], 'NX')
local consumed = redis.call('incrby', KEYS[1], ARGV[1])
local ttl = redis.call('pttl', KEYS[1])
if ttl == -1 then
  redis.call('expire', KEYS[1], ARGV[2])
  ttl = 1000 * ARGV[2]
end
if consumed > tonumber(ARGV[3]) then redis.call('decrby', KEYS[1], ARGV[1]) end
return {consumed, ttl}`;

/** Longest a rate-limit command may take before the request fails over (REDIS_URL). */
export const REDIS_COMMAND_TIMEOUT_MS = 250;

/**
 * The limit in Redis (rate-limiter-flexible's RateLimiterRedis over ioredis): one counter per
 * key per 60 s window, shared by every process using the same Redis and prefix, atomic on the
 * server. Allows exactly `perMinute` per window, together. A Redis that is down or slow fails
 * the take within {@link REDIS_COMMAND_TIMEOUT_MS} (no offline queue, no retries).
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly limiter: RateLimiterRedis;

  /** @param keyPrefix Redis keys are `<keyPrefix>:<key>`. */
  constructor(
    private readonly redis: Redis,
    perMinute: number,
    keyPrefix: string,
  ) {
    this.limiter = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix,
      points: perMinute,
      duration: 60,
      rejectIfRedisNotReady: true,
      customIncrTtlLuaScript: TAKE_IF_FITS,
    });
  }

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
    try {
      await this.limiter.consume(key, n);
      return 0;
    } catch (error) {
      if (error instanceof RateLimiterRes) return Math.max(1, error.msBeforeNext);
      throw new RateLimitStoreError(`the rate limit's Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  }

  async close(): Promise<void> {
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => this.redis.disconnect());
    else this.redis.disconnect();
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
 * The upload rate limiter the configuration asks for: in Redis with REDIS_URL (connecting now,
 * but starting without it: RATE_LIMIT_ON_REDIS_ERROR applies until it answers), else in memory.
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
  return new RedisRateLimiter(redis, config.UPLOAD_RATE_LIMIT_PER_MINUTE, `${config.TRIBUTARY_NAMESPACE}:upload-rate`);
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

/** The names of `fields` the schema has no mutation field of (UPLOAD_RATE_LIMIT_FIELDS set by hand is checked against it). */
export function unknownMutationFields(schema: GraphQLSchema, fields: readonly string[]): string[] {
  const mutation = schema.getMutationType()?.getFields() ?? {};
  return fields.filter((field) => !Object.hasOwn(mutation, field));
}

/**
 * The per-user upload rate limit, as an Apollo Server plugin: each of `fields` (root fields of a
 * mutation, UPLOAD_RATE_LIMIT_FIELDS) in a request takes a point, and over the limit the request
 * is refused with RATE_LIMITED (HTTP 429, with `retryAfterSeconds`). When the limiter's store
 * fails, `onStoreError` says what to do: `allow` lets the upload through, `deny` refuses it with
 * SERVICE_UNAVAILABLE (HTTP 503); either way it is counted and logged (at most once per 10 s).
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

/**
 * An operation name that names no operation in the document (or none given for several) is
 * the client's mistake. Apollo Gateway reports it as a 500 from inside the query planner;
 * answer it before planning, as a 400 with a code.
 */
export const unknownOperation: ApolloServerPlugin<GatewayContext> = {
  async requestDidStart() {
    return {
      async didResolveOperation(request) {
        if (request.operation) return;
        const name = request.request.operationName;
        const message = name ? `unknown operation named "${name.slice(0, 100)}"` : 'the document has several operations: name one with operationName';
        throw new GraphQLError(message, { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });
      },
    };
  },
};
