import type { AnalysisInput, Analyzer } from './types.ts';

/**
 * An LLM-backed {@link Analyzer} that can say, before calling, what the call will send and cost:
 * what the chain, the response cache and the token budget need. Every provider of a chain is one.
 */
export interface LlmProvider extends Analyzer {
  /** A high estimate of the tokens one call spends (prompt and maximum completion). */
  estimateTokens(input: AnalysisInput): number;
  /** Hash of (provider, model, prompt, output schema): equal keys mean an equal request. */
  cacheKey(input: AnalysisInput): string;
}
