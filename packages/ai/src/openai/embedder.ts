import OpenAI from 'openai';
import { AiError } from '../errors.ts';
import { assertEmbeddable, type Embedder } from '../embeddings.ts';
import { aiMetrics, type AiMetrics } from '../metrics.ts';
import { defaultRetryPolicy, retryTransient, type RetryPolicy } from '../retry.ts';
import { fromOpenAIError } from './errors.ts';

export interface OpenAIEmbedderOptions {
  apiKey: string;
  /** The API root; see {@link OpenAIProviderOptions.baseURL}. */
  baseURL?: string;
  /** e.g. `text-embedding-3-small`. */
  model: string;
  /** Ask for shorter vectors (`text-embedding-3-*` only). Default: the model's own length. */
  dimensions?: number;
  /** Per-call timeout. Default 30,000 ms. */
  timeoutMs?: number;
  /** Texts per request. Default 256 (the API takes up to 2,048). */
  batchSize?: number;
  /** Retries of transient failures. Defaults: see {@link RetryPolicy}. */
  retry?: RetryPolicy;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
  /** The provider's name. Default `openai`. */
  name?: string;
}

/**
 * Embeds through the `openai` SDK's embeddings API (any compatible endpoint), batching the texts,
 * retrying transient failures like {@link ChainAnalyzer} does, and counting tokens in `tokensIn`.
 */
export class OpenAIEmbedder implements Embedder {
  readonly provider: string;
  readonly model: string;
  private readonly client: OpenAI;
  private readonly policy: Required<RetryPolicy>;
  private readonly metrics: AiMetrics;

  constructor(private readonly options: OpenAIEmbedderOptions) {
    this.provider = options.name ?? 'openai';
    this.model = options.model;
    this.policy = { ...defaultRetryPolicy, ...options.retry };
    this.metrics = options.metrics ?? aiMetrics;
    this.client = new OpenAI({
      apiKey: options.apiKey,
      ...(options.baseURL ? { baseURL: options.baseURL } : {}),
      maxRetries: 0,
      timeout: options.timeoutMs ?? 30_000,
    });
  }

  async embed(texts: readonly string[], options: { signal?: AbortSignal } = {}): Promise<number[][]> {
    options.signal?.throwIfAborted();
    assertEmbeddable(texts);
    const size = this.options.batchSize ?? 256;
    const vectors: number[][] = [];
    for (let start = 0; start < texts.length; start += size) {
      const batch = texts.slice(start, start + size);
      const response = await retryTransient(() => this.request(batch, options.signal), this.policy, {
        signal: options.signal,
        onRetry: () => this.metrics.increment('retries'),
      });
      this.metrics.increment('tokensIn', response.usage?.prompt_tokens ?? 0);
      // The API documents `index`; ordering by it guards against a server that reorders.
      const ordered = [...response.data].sort((a, b) => a.index - b.index);
      if (ordered.length !== batch.length) {
        throw new AiError('INVALID_OUTPUT', `${this.provider}: ${ordered.length} embeddings for ${batch.length} texts`, { provider: this.provider });
      }
      vectors.push(...ordered.map((d) => d.embedding));
    }
    return vectors;
  }

  private async request(input: string[], signal: AbortSignal | undefined): Promise<OpenAI.CreateEmbeddingResponse> {
    try {
      return await this.client.embeddings.create(
        { model: this.model, input, ...(this.options.dimensions ? { dimensions: this.options.dimensions } : {}) },
        { maxRetries: 0, ...(signal ? { signal } : {}) },
      );
    } catch (error) {
      throw fromOpenAIError(error, this.provider, signal);
    }
  }
}
