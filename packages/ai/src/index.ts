export { AiError, AiErrorCode, isAiError, isTransientAiError, type AiErrorOptions } from './errors.ts';
export { analyzeOffline, OfflineAnalyzer } from './offline/analyzer.ts';
export {
  analysisOutputSchema,
  type AnalysisInput,
  type AnalysisOutput,
  type AnalysisResult,
  type AnalyzeOptions,
  type Analyzer,
  type SentimentLabel,
  type ThemeScore,
} from './types.ts';
export type { LlmProvider } from './provider.ts';
export { OpenAIProvider, type OpenAIProviderOptions } from './openai/provider.ts';
export { OpenAIEmbedder, type OpenAIEmbedderOptions } from './openai/embedder.ts';
export { ChainAnalyzer, type ChainOptions } from './chain.ts';
export { GuardedAnalyzer, DEFAULT_TENANT, type GuardedAnalyzerOptions } from './guarded.ts';
export { TokenLedger, utcDay, type Reservation } from './store/ledger.ts';
export { ResponseCache, type CacheEntry } from './store/cache.ts';
export { aiEntities, aiMigrations, aiRateLimitTables, CachedResponse, TokenLedgerEntry } from './store/entities.ts';
export { cosine, OfflineEmbedder, type Embedder } from './embeddings.ts';
export { analysisJsonSchema, toStrictJsonSchema } from './json-schema.ts';
export { backoffDelay, defaultRetryPolicy, parseRetryAfter, type RetryPolicy } from './retry.ts';
export { AiMetrics, aiMetrics, aiCounterNames, type AiCounterName, type AiMetricsSnapshot } from './metrics.ts';
export {
  aiConfigSchema,
  createAnalyzerFromEnv,
  createEmbedderFromEnv,
  loadAiConfig,
  providersFromEnv,
  type AiConfig,
  type ProviderSettings,
  type AiEnv,
  type AnalyzerFactoryOptions,
} from './config.ts';
// The stores the limits are counted in are @tributary/core/rate-limit's.
export { LimitedProvider, type LimitedProviderOptions, type RateLimits } from './limits.ts';
export { ChunkedAnalyzer, splitText, type ChunkedAnalyzerOptions } from './chunks.ts';
