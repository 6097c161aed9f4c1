import { isContentWord } from './keywords.ts';
import type { Sentence } from './text.ts';

/** Limits of an extractive summary. */
export interface SummaryLimits {
  readonly sentences: number;
  readonly chars: number;
}

const FIRST_SENTENCE_BONUS = 0.2;
const TITLE_BONUS = 0.3;
// Shorter "sentences", or ones without a final stop, are headings, captions or list stubs.
const MIN_TOKENS = 3;
const FINAL_STOP = /[.!?…]["'”’»)\]]*$/u;

/**
 * Picks the most representative sentences, in document order, preferring complete sentences of
 * three words or more. A sentence scores the summed relative frequency of its distinct content
 * words over the square root of their number (between favouring long and favouring short
 * sentences), with a bonus for the first sentence and for the title's words. Sentences are taken
 * best first while they fit the limits; when even the best does not fit alone, it is cut at a word
 * boundary and ends with `…`.
 */
export function summarize(
  sentences: readonly Sentence[],
  frequency: ReadonlyMap<string, number>,
  titleWords: ReadonlySet<string>,
  limits: SummaryLimits,
): string {
  const long = sentences.filter((s) => s.tokens.length >= MIN_TOKENS);
  const complete = long.filter((s) => FINAL_STOP.test(s.text));
  const pool = complete.length > 0 ? complete : long.length > 0 ? long : sentences;
  let highest = 1;
  for (const n of frequency.values()) if (n > highest) highest = n;
  const scored = pool.map((sentence) => {
    const words = new Set(sentence.tokens.filter(isContentWord));
    let sum = 0;
    let titleHits = 0;
    for (const word of words) {
      sum += (frequency.get(word) ?? 0) / highest;
      if (titleWords.has(word)) titleHits++;
    }
    const bonus =
      1 + (sentence.index === 0 ? FIRST_SENTENCE_BONUS : 0) + (titleWords.size > 0 ? (TITLE_BONUS * titleHits) / titleWords.size : 0);
    return { sentence, score: words.size === 0 ? 0 : (sum / Math.sqrt(words.size)) * bonus };
  });
  scored.sort((a, b) => b.score - a.score || a.sentence.index - b.sentence.index);

  const chosen: Sentence[] = [];
  let length = 0;
  for (const { sentence } of scored) {
    if (chosen.length === limits.sentences || length + 1 >= limits.chars) break;
    const added = sentence.text.length + (chosen.length > 0 ? 1 : 0);
    if (length + added > limits.chars || chosen.some((c) => c.text === sentence.text)) continue;
    chosen.push(sentence);
    length += added;
  }
  const best = scored[0]?.sentence.text ?? '';
  if (chosen.length === 0) return truncate(best, limits.chars);
  return chosen
    .sort((a, b) => a.index - b.index)
    .map((s) => s.text)
    .join(' ');
}

/** Cuts `text` to at most `max` characters at a word boundary, ending with `…`. */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const room = text.slice(0, max - 1);
  const space = room.lastIndexOf(' ');
  // A single word longer than the limit has no boundary to cut at; cut it, but not inside a surrogate pair.
  let cut = space > 0 ? room.slice(0, space) : room;
  if (space <= 0 && /[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return `${cut.replace(/[\s,;:\-–—]+$/u, '')}…`;
}
