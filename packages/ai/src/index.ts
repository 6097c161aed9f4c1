export { AiError, AiErrorCode, isAiError } from './errors.ts';
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
