import { AiError } from '../errors.ts';
import type { AnalysisInput, AnalysisOutput, AnalysisResult, AnalyzeOptions, Analyzer } from '../types.ts';
import { isContentWord, rankPhrases, selectKeywords, selectThemes } from './keywords.ts';
import { scoreSentiment } from './sentiment.ts';
import { summarize } from './summary.ts';
import { tokenize, toSentences } from './text.ts';

const MAX_KEYWORDS = 10;
const MAX_THEMES = 5;
const SUMMARY_LIMITS = { sentences: 3, chars: 400 } as const;

/**
 * Analyses a text offline: extractive summary (up to 3 sentences, 400 characters), up to 5 themes,
 * up to 10 keywords and a lexicon-based sentiment. Deterministic (the same input gives the same
 * output, byte for byte) and linear-ish in the text's length.
 *
 * @throws {AiError} `EMPTY_INPUT` (unrecoverable) when the text is empty or whitespace only.
 */
export function analyzeOffline(input: AnalysisInput): AnalysisOutput {
  if (input.text.trim() === '') throw new AiError('EMPTY_INPUT', 'Nothing to analyse: the text is empty');
  // NFC, so a letter with a combining accent tokenizes like its precomposed form.
  const sentences = toSentences(input.text.normalize('NFC'));
  const titleWords = new Set(tokenize((input.title ?? '').normalize('NFC')).tokens.filter(isContentWord));
  const { ranked, frequency } = rankPhrases(sentences, titleWords);
  return {
    summary: summarize(sentences, frequency, titleWords, SUMMARY_LIMITS),
    themes: selectThemes(ranked, MAX_THEMES),
    keywords: selectKeywords(ranked, MAX_KEYWORDS),
    sentiment: scoreSentiment(sentences),
  };
}

/**
 * The analyzer used when no LLM is configured: {@link analyzeOffline} behind the {@link Analyzer}
 * interface. No network, no model weights, no tokens spent (`tokens` is always 0/0, `cached` false).
 */
export class OfflineAnalyzer implements Analyzer {
  readonly provider = 'offline';
  readonly model = 'tributary-offline-1';

  /** Rejects with the signal's reason if it is already aborted; the work itself is synchronous. */
  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    options.signal?.throwIfAborted();
    return {
      ...analyzeOffline(input),
      provider: this.provider,
      model: this.model,
      tokens: { prompt: 0, completion: 0 },
      cached: false,
    };
  }
}
