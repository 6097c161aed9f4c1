/**
 * Token estimates of text that hold for any provider: what splitting a long text (chunks.ts) and
 * a provider's prompt estimate (openai/prompt.ts) both need, so neither imports the other.
 */

/**
 * A deliberately high token estimate of text: a token per 4 ASCII characters (English averages
 * about that) but one per other character, since non-Latin scripts often take a token or more each.
 */
export function estimateTextTokens(text: string): number {
  return tokensOfCounts(characterCounts(text));
}

/** The ASCII and other characters of `text`: what {@link estimateTextTokens} reads, and adds up across pieces. */
export function characterCounts(text: string): { ascii: number; other: number } {
  let ascii = 0;
  let other = 0;
  for (const char of text) {
    if (char.charCodeAt(0) < 128) ascii++;
    else other++;
  }
  return { ascii, other };
}

/** {@link estimateTextTokens} of a text with these {@link characterCounts}. */
export function tokensOfCounts(counts: { ascii: number; other: number }): number {
  return Math.ceil(counts.ascii / 4) + counts.other;
}
