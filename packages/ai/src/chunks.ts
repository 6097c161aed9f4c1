import { createHash } from 'node:crypto';
import { getMaxListeners, setMaxListeners } from 'node:events';
import type { LlmProvider } from './provider.ts';
import { characterCounts, estimateTextTokens, tokensOfCounts } from './tokens.ts';
import type { AnalysisInput, AnalysisResult, AnalyzeOptions, SentimentLabel, ThemeScore } from './types.ts';

/**
 * Split `text` into pieces of at most `maxTokens` each (by {@link estimateTextTokens}), on
 * paragraph boundaries where it can, else on sentence boundaries, else (one sentence longer than
 * a piece) on whitespace, else anywhere. Pieces are packed greedily and keep their separators,
 * so joined they give the text back whole.
 */
export function splitText(text: string, maxTokens: number): string[] {
  if (estimateTextTokens(text) <= maxTokens) return [text];
  const units = [/(?<=\n\s*\n)/, /(?<=[.!?…。！？])\s+/, /(?<=\s)/].reduce<string[]>(
    (pieces, boundary) => pieces.flatMap((piece) => (estimateTextTokens(piece) <= maxTokens ? [piece] : splitKeeping(piece, boundary))),
    [text],
  );
  return pack(
    units.flatMap((unit) => (estimateTextTokens(unit) <= maxTokens ? [unit] : pack(Array.from(unit), maxTokens))),
    maxTokens,
  );
}

/** Split after each match of `boundary`, keeping every character (the separator stays with the left piece). */
function splitKeeping(text: string, boundary: RegExp): string[] {
  const pieces: string[] = [];
  let start = 0;
  const global = new RegExp(boundary.source, 'g');
  for (const match of text.matchAll(global)) {
    const end = match.index + match[0].length;
    if (end > start) pieces.push(text.slice(start, end));
    start = end;
  }
  if (start < text.length) pieces.push(text.slice(start));
  return pieces.length > 0 ? pieces : [text];
}

/**
 * Pieces, in order, packed greedily into chunks of at most `maxTokens` (a piece over it alone
 * becomes a chunk of its own). The chunk's character counts are added up as it grows, not
 * re-read, so packing is linear in the text.
 */
function pack(pieces: readonly string[], maxTokens: number): string[] {
  const chunks: string[] = [];
  let current: string[] = [];
  let counts = { ascii: 0, other: 0 };
  for (const piece of pieces) {
    const own = characterCounts(piece);
    const grown = { ascii: counts.ascii + own.ascii, other: counts.other + own.other };
    if (current.length > 0 && tokensOfCounts(grown) > maxTokens) {
      chunks.push(current.join(''));
      current = [];
      counts = own;
    } else {
      counts = grown;
    }
    current.push(piece);
  }
  if (current.length > 0) chunks.push(current.join(''));
  return chunks;
}

export interface ChunkedAnalyzerOptions {
  /** Text tokens one call carries at most. Default 6,000. */
  maxChunkTokens?: number;
  /** Chunks analysed at most; beyond them the text is cut, and the result says so (`truncated`). Default 64. */
  maxChunks?: number;
}

/** Tokens the final call's prompt gets per chunk summary (a summary is at most 400 characters). */
const SUMMARY_TOKENS = 120;

/**
 * Long documents analysed whole. A text that fits one call goes through as it is. A longer one is
 * split ({@link splitText}) and its chunks analysed concurrently (each within the inner
 * provider's call slots and rate limits), then combined:
 * - summary: a final call over the chunk summaries, in order (a summary of summaries);
 * - themes: each theme's score averaged over the chunks, weighted by chunk length (absent = 0),
 *   scaled so the strongest is 1, the top 5;
 * - keywords: those found in most chunks first, then by their best rank in a chunk, the top 10;
 * - sentiment: the length-weighted mean score, labelled POSITIVE above 0.2, NEGATIVE below -0.2;
 * - tokens: every call's, added up.
 * `estimateTokens` covers every call, so a budget reserved with it is reserved for the whole
 * document before the first call. Progress (`onProgress`) counts the calls: chunks, then the final one.
 */
export class ChunkedAnalyzer implements LlmProvider {
  readonly provider: string;
  readonly model: string;
  private readonly maxChunkTokens: number;
  private readonly maxChunks: number;

  constructor(
    private readonly inner: LlmProvider & { readonly providers?: readonly LlmProvider[] },
    options: ChunkedAnalyzerOptions = {},
  ) {
    this.provider = inner.provider;
    this.model = inner.model;
    this.maxChunkTokens = options.maxChunkTokens ?? 6_000;
    this.maxChunks = options.maxChunks ?? 64;
    this.providers = inner.providers ?? [inner];
  }

  /** The chain's providers, for the cache (which keys answers by the provider that made them). */
  readonly providers: readonly LlmProvider[];

  /** The chunks `input` is analysed in, and whether text beyond {@link ChunkedAnalyzerOptions.maxChunks} is left out. */
  plan(input: AnalysisInput): { chunks: string[]; truncated: boolean } {
    const all = splitText(input.text, this.maxChunkTokens);
    return { chunks: all.slice(0, this.maxChunks), truncated: all.length > this.maxChunks };
  }

  estimateTokens(input: AnalysisInput): number {
    const { chunks } = this.plan(input);
    if (chunks.length === 1) return this.inner.estimateTokens(input);
    const calls = chunks.reduce((sum, text) => sum + this.inner.estimateTokens({ ...input, text }), 0);
    return calls + this.inner.estimateTokens({ ...input, text: 'x'.repeat(4 * SUMMARY_TOKENS * chunks.length) });
  }

  cacheKey(input: AnalysisInput): string {
    const { chunks, truncated } = this.plan(input);
    if (chunks.length === 1 && !truncated) return this.inner.cacheKey(input);
    const keys = chunks.map((text) => this.inner.cacheKey({ ...input, text }));
    return createHash('sha256').update(JSON.stringify(['chunked', this.maxChunkTokens, truncated, keys])).digest('hex');
  }

  async analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    const { chunks, truncated } = this.plan(input);
    if (chunks.length === 1 && !truncated) {
      return { ...(await this.inner.analyze(input, options)), chunks: 1, truncated: false };
    }
    const total = chunks.length + 1;
    // Every chunk's call listens to the one signal: more than Node's default of 10 is expected here.
    if (options.signal) setMaxListeners(Math.max(getMaxListeners(options.signal), 10 + chunks.length * 2), options.signal);
    let done = 0;
    const tick = () => options.onProgress?.({ done: ++done, total });
    const parts = await Promise.all(
      chunks.map(async (text, index) => {
        const title = input.title ? `${input.title} (part ${index + 1} of ${chunks.length})` : `Part ${index + 1} of ${chunks.length}`;
        const result = await this.inner.analyze({ text, title }, options);
        tick();
        return { result, weight: text.length };
      }),
    );
    const summaries = parts.map((p, i) => `Part ${i + 1}: ${p.result.summary}`).join('\n\n');
    const final = await this.inner.analyze({ text: summaries, ...(input.title ? { title: `${input.title} (summaries of its ${chunks.length} parts)` } : {}) }, options);
    tick();
    const tokens = [...parts.map((p) => p.result), final].reduce((sum, r) => ({ prompt: sum.prompt + r.tokens.prompt, completion: sum.completion + r.tokens.completion }), { prompt: 0, completion: 0 });
    return {
      summary: final.summary,
      themes: mergeThemes(parts),
      keywords: mergeKeywords(parts.map((p) => p.result.keywords)),
      sentiment: mergeSentiment(parts),
      provider: final.provider,
      model: final.model,
      tokens,
      cached: false,
      chunks: chunks.length,
      truncated,
    };
  }
}

type Part = { result: AnalysisResult; weight: number };

function mergeThemes(parts: readonly Part[]): ThemeScore[] {
  const totalWeight = parts.reduce((sum, p) => sum + p.weight, 0) || 1;
  const scores = new Map<string, number>();
  for (const { result, weight } of parts) for (const theme of result.themes) scores.set(theme.name, (scores.get(theme.name) ?? 0) + (theme.score * weight) / totalWeight);
  const top = Math.max(0, ...scores.values());
  return [...scores]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, 5)
    .map(([name, score]) => ({ name, score: top > 0 ? Math.round((score / top) * 1000) / 1000 : 0 }));
}

function mergeKeywords(lists: readonly string[][]): string[] {
  const seen = new Map<string, { chunks: number; best: number }>();
  for (const list of lists) {
    list.forEach((keyword, rank) => {
      const entry = seen.get(keyword) ?? { chunks: 0, best: rank };
      entry.chunks += 1;
      entry.best = Math.min(entry.best, rank);
      seen.set(keyword, entry);
    });
  }
  return [...seen]
    .sort((a, b) => b[1].chunks - a[1].chunks || a[1].best - b[1].best || a[0].localeCompare(b[0]))
    .slice(0, 10)
    .map(([keyword]) => keyword);
}

function mergeSentiment(parts: readonly Part[]): { label: SentimentLabel; score: number } {
  const totalWeight = parts.reduce((sum, p) => sum + p.weight, 0) || 1;
  const score = Math.round((parts.reduce((sum, p) => sum + p.result.sentiment.score * p.weight, 0) / totalWeight) * 1000) / 1000;
  return { label: score > 0.2 ? 'POSITIVE' : score < -0.2 ? 'NEGATIVE' : 'NEUTRAL', score };
}
