import { createHash } from 'node:crypto';
import OpenAI from 'openai';
import { AiError } from '../errors.ts';
import { analysisJsonSchema } from '../json-schema.ts';
import { aiMetrics, type AiMetrics } from '../metrics.ts';
import type { LlmProvider } from '../provider.ts';
import { analysisOutputSchema, type AnalysisInput, type AnalysisOutput, type AnalysisResult, type AnalyzeOptions } from '../types.ts';
import { fromOpenAIError } from './errors.ts';
import { ANALYSIS_SCHEMA_NAME, buildAnalysisMessages, estimatePromptTokens, type PromptMessage } from './prompt.ts';

/** How to reach an OpenAI-compatible chat completions endpoint. */
export interface OpenAIProviderOptions {
  apiKey: string;
  /**
   * The API root, e.g. `https://api.openai.com/v1` (the default), an Azure OpenAI
   * `https://<resource>.openai.azure.com/openai/v1`, Ollama's `http://localhost:11434/v1` or vLLM's
   * `http://localhost:8000/v1`.
   */
  baseURL?: string;
  /** e.g. `gpt-4o-mini`; must support structured outputs (`response_format: json_schema`). */
  model: string;
  /** The provider's name in results, logs and cache keys. Default `openai`. */
  name?: string;
  /** Per-call timeout. Default 30,000 ms. */
  timeoutMs?: number;
  /** The reply's token cap (`max_completion_tokens`), also the budget estimate's completion part. Default 1,024. */
  maxCompletionTokens?: number;
  /** Default: the process-wide {@link aiMetrics}. */
  metrics?: AiMetrics;
}

type Reply = { ok: true; output: AnalysisOutput } | { ok: false; problem: string };

/**
 * Analyses through the official `openai` SDK with strict structured output (a JSON schema from
 * {@link analysisOutputSchema}), then validates the reply with that schema anyway: a provider's
 * output is untrusted input. An invalid reply is asked for once more, then fails as
 * `INVALID_OUTPUT` (unrecoverable). The SDK's own retries are off: {@link ChainAnalyzer} retries,
 * so backoff, fallback and counting happen in one place.
 *
 * @throws {AiError} `EMPTY_INPUT`, `RATE_LIMITED`, `PROVIDER_UNAVAILABLE`, `TIMEOUT`, `PROVIDER_REJECTED`, `INVALID_OUTPUT`
 */
export class OpenAIProvider implements LlmProvider {
  readonly provider: string;
  readonly model: string;
  private readonly client: OpenAI;
  private readonly timeoutMs: number;
  private readonly maxCompletionTokens: number;
  private readonly metrics: AiMetrics;

  constructor(options: OpenAIProviderOptions) {
    this.provider = options.name ?? 'openai';
    this.model = options.model;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxCompletionTokens = options.maxCompletionTokens ?? 1_024;
    this.metrics = options.metrics ?? aiMetrics;
    this.client = new OpenAI({
      apiKey: options.apiKey,
      ...(options.baseURL ? { baseURL: options.baseURL } : {}),
      maxRetries: 0,
      timeout: this.timeoutMs,
    });
  }

  estimateTokens(input: AnalysisInput): number {
    return estimatePromptTokens(this.messages(input), analysisJsonSchema) + this.maxCompletionTokens;
  }

  cacheKey(input: AnalysisInput): string {
    const request = [this.provider, this.model, this.messages(input), ANALYSIS_SCHEMA_NAME, analysisJsonSchema];
    return createHash('sha256').update(JSON.stringify(request)).digest('hex');
  }

  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    options.signal?.throwIfAborted();
    if (input.text.trim() === '') throw new AiError('EMPTY_INPUT', 'Nothing to analyse: the text is empty', { provider: this.provider });
    const messages = this.messages(input);
    const tokens = { prompt: 0, completion: 0 };
    let problem = '';
    for (let attempt = 1; attempt <= 2; attempt++) {
      if (attempt > 1) this.metrics.increment('retries');
      const completion = await this.complete(messages, options.signal);
      const usage = { prompt: completion.usage?.prompt_tokens ?? 0, completion: completion.usage?.completion_tokens ?? 0 };
      tokens.prompt += usage.prompt;
      tokens.completion += usage.completion;
      this.metrics.increment('tokensIn', usage.prompt);
      this.metrics.increment('tokensOut', usage.completion);
      const reply = readReply(completion);
      if (reply.ok) return { ...reply.output, provider: this.provider, model: this.model, tokens, cached: false };
      problem = reply.problem;
    }
    throw new AiError('INVALID_OUTPUT', `${this.provider}: invalid reply twice, last: ${problem}`, { provider: this.provider, tokens });
  }

  private messages(input: AnalysisInput): PromptMessage[] {
    return buildAnalysisMessages(input);
  }

  private async complete(messages: PromptMessage[], signal: AbortSignal | undefined): Promise<OpenAI.ChatCompletion> {
    try {
      return await this.client.chat.completions.create(
        {
          model: this.model,
          messages,
          response_format: { type: 'json_schema', json_schema: { name: ANALYSIS_SCHEMA_NAME, strict: true, schema: analysisJsonSchema } },
          max_completion_tokens: this.maxCompletionTokens,
        },
        { timeout: this.timeoutMs, maxRetries: 0, ...(signal ? { signal } : {}) },
      );
    } catch (error) {
      throw fromOpenAIError(error, this.provider, signal);
    }
  }
}

function readReply(completion: OpenAI.ChatCompletion): Reply {
  const choice = completion.choices[0];
  if (!choice) return { ok: false, problem: 'no choices' };
  if (choice.message.refusal) return { ok: false, problem: `refused: ${choice.message.refusal.slice(0, 200)}` };
  // A reply cut at the token cap is unfinished JSON at best.
  if (choice.finish_reason === 'length') return { ok: false, problem: 'cut at max_completion_tokens' };
  const content = choice.message.content;
  if (!content) return { ok: false, problem: 'empty content' };
  let json: unknown;
  try {
    json = JSON.parse(content);
  } catch {
    return { ok: false, problem: `not JSON: ${content.slice(0, 80)}` };
  }
  const parsed = analysisOutputSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    return { ok: false, problem: `schema: ${issues.join('; ')}` };
  }
  return { ok: true, output: parsed.data };
}
