import type { ThemeScore } from '../types.ts';
import { STOPWORDS, type Sentence } from './text.ts';

/** A candidate key phrase of one to three words, its weight (> 0) and how often it occurs. */
export interface RankedPhrase {
  readonly phrase: string;
  readonly words: readonly string[];
  readonly weight: number;
  readonly count: number;
}

export interface PhraseStats {
  /** Candidates by weight descending, then phrase ascending. */
  readonly ranked: readonly RankedPhrase[];
  /** How often each content word occurs. */
  readonly frequency: ReadonlyMap<string, number>;
}

const MAX_PHRASE_CHARS = 64;
const MAX_WORD_CHARS = 40;
const TITLE_BOOST = 0.5;
const HAS_LETTER = /\p{L}/u;

interface Count {
  readonly phrase: string;
  readonly words: readonly string[];
  count: number;
}

/** Whether a token can be part of a key phrase: not a stopword, not a number, not a stray letter. */
export function isContentWord(token: string): boolean {
  return token.length >= 2 && token.length <= MAX_WORD_CHARS && !STOPWORDS.has(token) && HAS_LETTER.test(token);
}

/**
 * Ranks the 1–3-word phrases found between stopwords and punctuation. Weight = termhood × salience:
 * termhood is C-value-like (Frantzi et al.), `log2(1 + words) × (occurrences − mean occurrences of
 * the repeated longer phrases containing it)`, so `energy` is not credited with the times it only
 * appears inside `renewable energy`; salience is the mean `log2(1 + frequency)` of its words, so a
 * phrase seen once but made of recurring words beats a chance one. Phrases whose words appear in
 * the title weigh up to 50% more. Linear in the token count, plus sorting the distinct phrases.
 */
export function rankPhrases(sentences: readonly Sentence[], titleWords: ReadonlySet<string>): PhraseStats {
  const counts = new Map<string, Count>();
  const count = (words: string[]): void => {
    const phrase = words.join(' ');
    const entry = counts.get(phrase);
    if (entry === undefined) counts.set(phrase, { phrase, words, count: 1 });
    else entry.count++;
  };
  for (const sentence of sentences) {
    // The two content words before the current one, within the same run.
    let before: string | undefined;
    let last: string | undefined;
    for (const [i, token] of sentence.tokens.entries()) {
      const content = isContentWord(token);
      if (!content || sentence.breaks[i] === true) before = last = undefined;
      if (!content) continue;
      count([token]);
      if (last !== undefined) count([last, token]);
      if (before !== undefined && last !== undefined) count([before, last, token]);
      before = last;
      last = token;
    }
  }

  const nested = new Map<string, { sum: number; phrases: number }>();
  const frequency = new Map<string, number>();
  for (const { phrase, words, count: occurrences } of counts.values()) {
    if (words.length === 1) frequency.set(phrase, occurrences);
    // A longer phrase seen once is a chance neighbourhood, not a term: it takes nothing from its parts.
    if (occurrences < 2) continue;
    for (const sub of subPhrases(words)) {
      const entry = nested.get(sub) ?? { sum: 0, phrases: 0 };
      entry.sum += occurrences;
      entry.phrases++;
      nested.set(sub, entry);
    }
  }

  const ranked: RankedPhrase[] = [];
  for (const { phrase, words, count: occurrences } of counts.values()) {
    if (phrase.length > MAX_PHRASE_CHARS) continue;
    const inLonger = nested.get(phrase);
    const own = occurrences - (inLonger === undefined ? 0 : inLonger.sum / inLonger.phrases);
    let salience = 0;
    let inTitle = 0;
    for (const word of words) {
      salience += Math.log2(1 + (frequency.get(word) ?? 1)) / words.length;
      if (titleWords.has(word)) inTitle += 1 / words.length;
    }
    const weight = Math.log2(1 + words.length) * own * salience * (1 + TITLE_BOOST * inTitle);
    if (weight > 0) ranked.push({ phrase, words, weight, count: occurrences });
  }
  ranked.sort((a, b) => b.weight - a.weight || compare(a.phrase, b.phrase));
  return { ranked, frequency };
}

/** The contiguous shorter phrases inside a 2- or 3-word phrase, each once. */
function subPhrases(words: readonly string[]): Set<string> {
  const subs = new Set<string>();
  for (let length = 1; length < words.length; length++) {
    for (let start = 0; start + length <= words.length; start++) subs.add(words.slice(start, start + length).join(' '));
  }
  return subs;
}

/** The top phrases, skipping any that is part of, or contains, a phrase already taken. */
export function selectKeywords(ranked: readonly RankedPhrase[], max: number): string[] {
  const keywords: string[] = [];
  for (const { phrase } of ranked) {
    if (keywords.length === max) break;
    if (!keywords.some((keyword) => nests(keyword, phrase) || nests(phrase, keyword))) keywords.push(phrase);
  }
  return keywords;
}

function nests(outer: string, inner: string): boolean {
  return ` ${outer} `.includes(` ${inner} `);
}

/**
 * Groups the top phrases into themes: a phrase that shares a word with an earlier theme adds its
 * weight to that theme (`renewable energy` and `energy storage` are one theme); any other starts a
 * new theme while there is room, if the document comes back to it: when some phrase occurs twice,
 * one that occurs once is detail, not a theme. Scores are weights relative to the strongest theme,
 * so it scores 1.
 */
export function selectThemes(ranked: readonly RankedPhrase[], max: number): ThemeScore[] {
  const themes: { name: string; words: readonly string[]; weight: number }[] = [];
  const least = ranked.some((p) => p.count > 1) ? 2 : 1;
  for (const { phrase, words, weight, count } of ranked.slice(0, max * 10)) {
    const theme = themes.find((t) => t.words.some((word) => words.includes(word)));
    if (theme !== undefined) theme.weight += weight;
    else if (themes.length < max && count >= least) themes.push({ name: phrase, words, weight });
  }
  const strongest = Math.max(0, ...themes.map((t) => t.weight));
  return themes
    .map((t) => ({ name: t.name, score: Math.round((t.weight / strongest) * 1000) / 1000 }))
    .sort((a, b) => b.score - a.score || compare(a.name, b.name));
}

// Code-unit order: the same on every machine, unlike localeCompare.
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
