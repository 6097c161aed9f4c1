import type { SentimentLabel } from '../types.ts';
import { MODIFIERS, NEGATORS, SENTIMENT_LEXICON } from './lexicon.ts';
import type { Sentence } from './text.ts';

const NEGATION_WINDOW = 3;
// As in VADER (Hutto & Gilbert, 2014): "not good" is less negative than "bad" is.
const NEGATION_FACTOR = -0.74;
// Additive smoothing: one mild word is a lean, not a verdict ("good" scores 1/3).
const SMOOTHING = 2;
const THRESHOLD = 0.05;

/**
 * Lexicon-based sentiment. Each sentiment word counts its polarity, scaled by an intensifier or
 * diminisher right before it and flipped by a negator up to three tokens before it in the same
 * sentence. Score = (positive − negative) / (positive + negative + 2), in (−1, 1), so it reflects
 * the balance of opinion and grows with the amount of evidence, whatever the text's length.
 */
export function scoreSentiment(sentences: readonly Sentence[]): { label: SentimentLabel; score: number } {
  let positive = 0;
  let negative = 0;
  for (const { tokens } of sentences) {
    for (const [i, token] of tokens.entries()) {
      const polarity = SENTIMENT_LEXICON.get(token);
      if (polarity === undefined) continue;
      let value = polarity * (MODIFIERS.get(tokens[i - 1] ?? '') ?? 1);
      for (let j = Math.max(0, i - NEGATION_WINDOW); j < i; j++) {
        if (isNegator(tokens[j] ?? '')) {
          value *= NEGATION_FACTOR;
          break;
        }
      }
      if (value > 0) positive += value;
      else negative -= value;
    }
  }
  // `+ 0` turns -0 into 0, so "-0" never reaches the output.
  const score = Math.round(((positive - negative) / (positive + negative + SMOOTHING)) * 1000) / 1000 + 0;
  const label: SentimentLabel = score > THRESHOLD ? 'POSITIVE' : score < -THRESHOLD ? 'NEGATIVE' : 'NEUTRAL';
  return { label, score };
}

function isNegator(token: string): boolean {
  return NEGATORS.has(token) || token.endsWith("n't");
}
