import type { Logger } from '@tributary/core';
import { loadConfig, urlWithProtocol } from '@tributary/core/config';
import type { Database } from '@tributary/core/db';
import { z } from 'zod';
import { ChainAnalyzer } from './chain.ts';
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

export interface AnalyzerFactoryOptions {
  /** The analysis database, migrated with {@link aiMigrations} (ledger and cache live there). */
  db: Database;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
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
  if (!config.OPENAI_API_KEY) {
    options.logger.info({ provider: 'offline' }, 'no OPENAI_API_KEY: analysing with the offline analyzer');
    return new OfflineAnalyzer();
  }
  const provider = new OpenAIProvider({
    apiKey: config.OPENAI_API_KEY,
    ...(config.OPENAI_BASE_URL ? { baseURL: config.OPENAI_BASE_URL } : {}),
    model: config.AI_MODEL,
    timeoutMs: config.AI_TIMEOUT_MS,
    metrics,
  });
  const chain = new ChainAnalyzer([provider], { metrics, logger: options.logger, ...(options.retry ? { retry: options.retry } : {}) });
  const analyzer = new GuardedAnalyzer(chain, {
    db: options.db,
    dailyTokenBudget: config.AI_DAILY_TOKEN_BUDGET,
    ...(config.AI_BUDGET_FALLBACK === 'offline' ? { budgetFallback: new OfflineAnalyzer() } : {}),
    metrics,
    logger: options.logger,
  });
  options.logger.info(
    {
      provider: provider.provider,
      model: provider.model,
      endpoint: config.OPENAI_BASE_URL ? new URL(config.OPENAI_BASE_URL).origin : 'https://api.openai.com',
      dailyTokenBudget: config.AI_DAILY_TOKEN_BUDGET,
      budgetFallback: config.AI_BUDGET_FALLBACK,
    },
    `analysing with ${provider.provider} (${provider.model})`,
  );
  return analyzer;
}

/** The configured embedder: {@link OpenAIEmbedder} with `OPENAI_API_KEY`, else {@link OfflineEmbedder}. Logs which. */
export function createEmbedderFromEnv(
  env: AiEnv,
  options: { logger: Pick<Logger, 'info'>; metrics?: AiMetrics; retry?: RetryPolicy },
): Embedder {
  const config = loadAiConfig(env);
  if (!config.OPENAI_API_KEY) {
    const embedder = new OfflineEmbedder();
    options.logger.info({ provider: embedder.provider, model: embedder.model }, 'no OPENAI_API_KEY: embedding offline');
    return embedder;
  }
  const embedder = new OpenAIEmbedder({
    apiKey: config.OPENAI_API_KEY,
    ...(config.OPENAI_BASE_URL ? { baseURL: config.OPENAI_BASE_URL } : {}),
    model: config.AI_EMBEDDING_MODEL,
    timeoutMs: config.AI_TIMEOUT_MS,
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.retry ? { retry: options.retry } : {}),
  });
  options.logger.info({ provider: embedder.provider, model: embedder.model }, `embedding with ${embedder.provider} (${embedder.model})`);
  return embedder;
}
