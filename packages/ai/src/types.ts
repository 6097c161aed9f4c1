import { z } from 'zod';

/** What to analyse: the document's plain text, markup already stripped. */
export interface AnalysisInput {
  text: string;
  /** The document's title; its words count as evidence of what matters. */
  title?: string;
}

/** A theme of the document, `score` in [0, 1] (the strongest theme of a document is 1 for the offline analyzer). */
export interface ThemeScore {
  name: string;
  score: number;
}

export type SentimentLabel = 'POSITIVE' | 'NEUTRAL' | 'NEGATIVE';

/** The analysis proper, as a provider produces it (and as an LLM must reply it). */
export interface AnalysisOutput {
  summary: string;
  themes: ThemeScore[];
  keywords: string[];
  /** `score` in [-1, 1]. */
  sentiment: { label: SentimentLabel; score: number };
}

/** An analysis plus who made it and what it cost. */
export interface AnalysisResult extends AnalysisOutput {
  provider: string;
  model: string;
  tokens: { prompt: number; completion: number };
  /** Whether the result came from a cache rather than the provider. */
  cached: boolean;
  /** Calls the text was analysed in (a long one is split); 1 when not said. */
  chunks?: number | undefined;
  /** Whether text beyond the most chunks analysed was left out. */
  truncated?: boolean | undefined;
}

export interface AnalyzeOptions {
  /** Aborts the analysis; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The tenant the analysis is for (budgets, caches); providers that do not need it ignore it. */
  tenantId?: string;
  /** Told after each call of an analysis made of several (a long text): calls done of the total. */
  onProgress?: (progress: { done: number; total: number }) => void;
}

/**
 * One interface, several implementations (offline, LLM providers). An implementation rejects with
 * an {@link AiError} whose `unrecoverable` flag tells the caller whether a retry can help.
 */
export interface Analyzer {
  /** e.g. `offline`, `openai`. */
  readonly provider: string;
  readonly model: string;
  analyze(input: AnalysisInput, options?: AnalyzeOptions): Promise<AnalysisResult>;
}

/**
 * The one parser for an {@link AnalysisOutput}, e.g. an LLM's reply. The limits keep a
 * misbehaving provider from flooding events and databases downstream.
 */
export const analysisOutputSchema = z.object({
  summary: z.string().min(1).max(2000),
  themes: z.array(z.object({ name: z.string().min(1).max(64), score: z.number().min(0).max(1) })).max(10),
  keywords: z.array(z.string().min(1).max(64)).max(20),
  sentiment: z.object({
    label: z.enum(['POSITIVE', 'NEUTRAL', 'NEGATIVE']),
    score: z.number().min(-1).max(1),
  }),
}) satisfies z.ZodType<AnalysisOutput>;
