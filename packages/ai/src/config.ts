import type { Logger } from '@tributary/core';
import { loadConfig, urlWithProtocol } from '@tributary/core/config';
import type { Database } from '@tributary/core/db';
import { z } from 'zod';
import { Redis } from 'ioredis';
import pLimit from 'p-limit';
import { ChainAnalyzer } from './chain.ts';
import { ChunkedAnalyzer } from './chunks.ts';
import { MemoryRateLimitStore, RedisRateLimitStore, SqlRateLimitStore, type RateLimitStore } from '@tributary/core/rate-limit';
import { LimitedProvider } from './limits.ts';
import { aiRateLimitTables } from './store/entities.ts';
import { OfflineEmbedder, type Embedder } from './embeddings.ts';
import { GuardedAnalyzer } from './guarded.ts';
import { aiMetrics, type AiMetrics } from './metrics.ts';
import { OfflineAnalyzer } from './offline/analyzer.ts';
import { OpenAIEmbedder } from './openai/embedder.ts';
import { OpenAIProvider } from './openai/provider.ts';
import type { RetryPolicy } from './retry.ts';
import type { Analyzer } from './types.ts';

/**
 * The AI settings. A service validates them with its own at start (all errors at once):
 * `baseConfigSchema.extend(aiConfigSchema.shape)`.
 */
export const aiConfigSchema = z.object({
  /** Unset: the offline analyzer and embedder, no network. Any non-empty value for servers that ignore it (Ollama, vLLM). */
  OPENAI_API_KEY: z.string().min(1).optional(),
  /** The OpenAI-compatible API root (Azure OpenAI, Ollama, vLLM…). Default: OpenAI's. */
  OPENAI_BASE_URL: urlWithProtocol('http:', 'https:').optional(),
  /** Chat model; must support structured outputs. Default `gpt-4o-mini`. */
  AI_MODEL: z.string().min(1).default('gpt-4o-mini'),
  /** Default `text-embedding-3-small`. */
  AI_EMBEDDING_MODEL: z.string().min(1).default('text-embedding-3-small'),
  /** Tokens per tenant per UTC day. Default 1,000,000. */
  AI_DAILY_TOKEN_BUDGET: z.coerce.number().int().min(0).default(1_000_000),
  /** Per-call timeout of LLM requests, ms. Default 30,000. */
  AI_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(30_000),
  /** Over budget: `none` fails the job with BUDGET_EXCEEDED, `offline` analyses offline instead. Default `none`. */
  AI_BUDGET_FALLBACK: z.enum(['none', 'offline']).default('none'),
  /**
   * Several OpenAI-compatible providers, tried in this order on failure, e.g. `openai,local`;
   * each is set with `AI_<NAME>_BASE_URL`, `AI_<NAME>_API_KEY`, `AI_<NAME>_MODEL` and its own
   * rate limits. Unset: one provider, `openai`, from `OPENAI_API_KEY` and `OPENAI_BASE_URL`.
   */
  AI_PROVIDERS: z
    .string()
    .regex(/^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$/, 'must be comma-separated provider names (lower case letters, digits, _), e.g. openai,local')
    .refine((v) => new Set(v.split(',')).size === v.split(',').length, 'names a provider twice')
    .optional(),
  /** Calls per minute per provider, honoured by every analysis process together. Default: no limit. */
  AI_MAX_REQUESTS_PER_MINUTE: z.coerce.number().int().min(1).optional(),
  /** Tokens per minute per provider (each call counts its prompt estimate plus its completion cap), honoured together. Default: no limit. */
  AI_MAX_TOKENS_PER_MINUTE: z.coerce.number().int().min(1).optional(),
  /** Text tokens one model call carries at most; a longer document is analysed in chunks of this size. Default 6,000. */
  AI_MAX_CHUNK_TOKENS: z.coerce.number().int().min(200).max(1_000_000).default(6_000),
  /** Chunks analysed at most per document; text beyond is left out, and the analysis says so (`truncated`). Default 64. */
  AI_MAX_CHUNKS: z.coerce.number().int().min(1).max(1_000).default(64),
  /** Keep the shared rate windows in this Redis instead of the analysis database. */
  REDIS_URL: urlWithProtocol('redis:', 'rediss:').optional(),
});
export type AiConfig = z.infer<typeof aiConfigSchema>;

/** Environment variables, or a service's config already parsed with {@link aiConfigSchema}'s keys in it. */
export type AiEnv = Readonly<Record<string, unknown>>;

/**
 * Validates the AI settings of `env` (other keys are ignored).
 * @throws ConfigError (from @tributary/core) listing every invalid key.
 */
export function loadAiConfig(env: AiEnv = process.env): AiConfig {
  const strings: Record<string, string> = {};
  for (const key of Object.keys(aiConfigSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== null) strings[key] = String(value);
  }
  return loadConfig(aiConfigSchema, strings);
}

/** One configured provider. */
export interface ProviderSettings {
  name: string;
  apiKey: string;
  baseURL: string | undefined;
  model: string;
  limits: { requests?: number; tokens?: number };
}

/**
 * The providers `env` configures, in chain order: `AI_PROVIDERS` with each one's
 * `AI_<NAME>_*` settings, or the single `openai` one from `OPENAI_API_KEY`; none without a key.
 * @throws ConfigError listing every invalid key.
 */
export function providersFromEnv(env: AiEnv, config: AiConfig = loadAiConfig(env)): ProviderSettings[] {
  const defaults = { requests: config.AI_MAX_REQUESTS_PER_MINUTE, tokens: config.AI_MAX_TOKENS_PER_MINUTE };
  const limits = (requests: number | undefined, tokens: number | undefined) => ({ ...(requests ? { requests } : {}), ...(tokens ? { tokens } : {}) });
  if (!config.AI_PROVIDERS) {
    if (!config.OPENAI_API_KEY) return [];
    return [{ name: 'openai', apiKey: config.OPENAI_API_KEY, baseURL: config.OPENAI_BASE_URL, model: config.AI_MODEL, limits: limits(defaults.requests, defaults.tokens) }];
  }
  const names = config.AI_PROVIDERS.split(',');
  const shape: Record<string, z.ZodType> = {};
  for (const name of names) {
    const prefix = `AI_${name.toUpperCase()}_`;
    shape[`${prefix}API_KEY`] = z.string().min(1, 'is required for every provider in AI_PROVIDERS (any non-empty value for servers that ignore it)');
    shape[`${prefix}BASE_URL`] = urlWithProtocol('http:', 'https:').optional();
    shape[`${prefix}MODEL`] = z.string().min(1).optional();
    shape[`${prefix}MAX_REQUESTS_PER_MINUTE`] = z.coerce.number().int().min(1).optional();
    shape[`${prefix}MAX_TOKENS_PER_MINUTE`] = z.coerce.number().int().min(1).optional();
  }
  const schema = z.object(shape);
  const strings: Record<string, string> = {};
  for (const key of Object.keys(shape)) if (env[key] !== undefined && env[key] !== null) strings[key] = String(env[key]);
  const parsed = loadConfig(schema, strings) as Record<string, string | number | undefined>;
  return names.map((name) => {
    const get = (key: string) => parsed[`AI_${name.toUpperCase()}_${key}`];
    return {
      name,
      apiKey: String(get('API_KEY')),
      baseURL: get('BASE_URL') as string | undefined,
      model: (get('MODEL') as string | undefined) ?? config.AI_MODEL,
      limits: limits((get('MAX_REQUESTS_PER_MINUTE') as number | undefined) ?? defaults.requests, (get('MAX_TOKENS_PER_MINUTE') as number | undefined) ?? defaults.tokens),
    };
  });
}

export interface AnalyzerFactoryOptions {
  /** The analysis database, migrated with {@link aiMigrations} (ledger and cache live there). */
  db: Database;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
  /** Model calls in flight at once in this process, over all providers. Default: no limit. */
  callConcurrency?: number;
  /** Retries per provider; defaults in {@link RetryPolicy}. */
  retry?: RetryPolicy;
}

/**
 * The configured analyzer: with `OPENAI_API_KEY`, an {@link OpenAIProvider} in a
 * {@link ChainAnalyzer} (retries, backoff) behind a {@link GuardedAnalyzer} (response cache,
 * daily token budget, optional offline fallback); without, the {@link OfflineAnalyzer}. Logs which.
 * @throws ConfigError when a setting is invalid.
 */
export function createAnalyzerFromEnv(env: AiEnv, options: AnalyzerFactoryOptions): Analyzer {
  const config = loadAiConfig(env);
  const metrics = options.metrics ?? aiMetrics;
  const settings = providersFromEnv(env, config);
  if (settings.length === 0) {
    options.logger.info({ provider: 'offline' }, 'no OPENAI_API_KEY: analysing with the offline analyzer');
    return new OfflineAnalyzer();
  }
  // One pool of call slots for the process; each provider's rate window shared by every process.
  const slots = options.callConcurrency ? pLimit(options.callConcurrency) : undefined;
  const rateStore = config.REDIS_URL ? 'redis' : options.db.target.kind === 'pglite' ? 'memory' : 'database';
  // The Redis keys and SQL tables these limits have always been counted under, so a rolling
  // upgrade's old and new processes share one window.
  const store: RateLimitStore =
    rateStore === 'redis'
      ? new RedisRateLimitStore(new Redis(config.REDIS_URL!, { maxRetriesPerRequest: 3 }), 'tributary:ai-rate')
      : rateStore === 'memory'
        ? new MemoryRateLimitStore()
        : new SqlRateLimitStore(options.db, aiRateLimitTables);
  const providers = settings.map(
    (p) =>
      new LimitedProvider(
        new OpenAIProvider({ apiKey: p.apiKey, ...(p.baseURL ? { baseURL: p.baseURL } : {}), model: p.model, name: p.name, timeoutMs: config.AI_TIMEOUT_MS, metrics }),
        { ...(slots ? { slots } : {}), rate: { limits: p.limits, store } },
      ),
  );
  const chain = new ChainAnalyzer(providers, { metrics, logger: options.logger, ...(options.retry ? { retry: options.retry } : {}) });
  // Outside the chain: each chunk's call can fall back on its own. Inside the guard: the budget
  // is reserved for every chunk's call before the first, and the combined answer is cached.
  const chunked = new ChunkedAnalyzer(chain, { maxChunkTokens: config.AI_MAX_CHUNK_TOKENS, maxChunks: config.AI_MAX_CHUNKS });
  const analyzer = new GuardedAnalyzer(chunked, {
    db: options.db,
    dailyTokenBudget: config.AI_DAILY_TOKEN_BUDGET,
    ...(config.AI_BUDGET_FALLBACK === 'offline' ? { budgetFallback: new OfflineAnalyzer() } : {}),
    metrics,
    logger: options.logger,
  });
  options.logger.info(
    {
      providers: settings.map((p) => ({
        provider: p.name,
        model: p.model,
        endpoint: p.baseURL ? new URL(p.baseURL).origin : 'https://api.openai.com',
        ...(p.limits.requests ? { maxRequestsPerMinute: p.limits.requests } : {}),
        ...(p.limits.tokens ? { maxTokensPerMinute: p.limits.tokens } : {}),
      })),
      rateStore,
      callConcurrency: options.callConcurrency ?? null,
      dailyTokenBudget: config.AI_DAILY_TOKEN_BUDGET,
      budgetFallback: config.AI_BUDGET_FALLBACK,
    },
    `analysing with ${settings.map((p) => `${p.name} (${p.model})`).join(', then ')}`,
  );
  return analyzer;
}

/** The configured embedder: {@link OpenAIEmbedder} on the first configured provider, else {@link OfflineEmbedder}. Logs which. */
export function createEmbedderFromEnv(
  env: AiEnv,
  options: { logger: Pick<Logger, 'info'>; metrics?: AiMetrics; retry?: RetryPolicy },
): Embedder {
  const config = loadAiConfig(env);
  const [first] = providersFromEnv(env, config);
  if (!first) {
    const embedder = new OfflineEmbedder();
    options.logger.info({ provider: embedder.provider, model: embedder.model }, 'no OPENAI_API_KEY: embedding offline');
    return embedder;
  }
  const embedder = new OpenAIEmbedder({
    apiKey: first.apiKey,
    ...(first.baseURL ? { baseURL: first.baseURL } : {}),
    model: config.AI_EMBEDDING_MODEL,
    name: first.name,
    timeoutMs: config.AI_TIMEOUT_MS,
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.retry ? { retry: options.retry } : {}),
  });
  options.logger.info({ provider: embedder.provider, model: embedder.model }, `embedding with ${embedder.provider} (${embedder.model})`);
  return embedder;
}
