/** A sentence of the document and its word tokens. */
export interface Sentence {
  /** Position among the document's sentences, from 0. */
  readonly index: number;
  /** The sentence as written, runs of whitespace collapsed to one space. */
  readonly text: string;
  /** Lowercased words: letters, digits and marks, inner apostrophes and hyphens; a possessive `'s` dropped. */
  readonly tokens: readonly string[];
  /** `breaks[i]` is true when punctuation stands between `tokens[i - 1]` and `tokens[i]`: no phrase spans it. */
  readonly breaks: readonly boolean[];
}

const BULLET = /^\s*(?:[-*•‣▪◦]|\d{1,3}[.)]|\(\w{1,3}\)|[a-z]\))\s+/u;
// A run of terminators and closing quotes/brackets, then whitespace (none needed after CJK ones);
// captures the next visible character.
const TERMINATOR = /[.!?…]+["'”’»)\]]*(?=\s+(\S))|[。！？]+[」』”’)）]*(?=\s*(\S))/gu;
const WORD = /[\p{L}\p{N}\p{M}]+(?:['’\-][\p{L}\p{N}\p{M}]+)*/gu;
const LOWERCASE = /^\p{Ll}/u;
const LETTER = /^\p{L}$/u;
const DOTTED = /^(?:\p{L}{1,2}\.)+\p{L}{1,2}$/u;

// Words that end with a period yet rarely end a sentence: titles and references before a name or number.
// `etc`, `inc` and the like are left out on purpose: they often do end one.
const ABBREVIATIONS = new Set(
  ('mr mrs ms mx dr prof sr jr st mt rev gen col lt sgt capt gov sen rep hon vs cf no nos fig figs ' +
    'vol vols p pp ch sec approx jan feb apr jun jul aug sep sept oct nov dec').split(' '),
);

/**
 * Splits text into sentences. Blank lines and list items always end a sentence; single newlines
 * inside a paragraph are hard wraps. A period ends a sentence unless it follows an abbreviation,
 * an initial or a dotted abbreviation (`e.g.`, `U.S.`), or the next word starts in lowercase;
 * decimals and domains never split because a terminator must be followed by whitespace.
 */
export function splitSentences(text: string): string[] {
  const sentences: string[] = [];
  for (const block of text.replace(/\r\n?/g, '\n').split(/\n[^\S\n]*\n/)) {
    let paragraph = '';
    for (const line of block.split('\n')) {
      const bullet = BULLET.exec(line);
      if (bullet === null) {
        paragraph += ` ${line}`;
      } else {
        splitParagraph(paragraph, sentences);
        paragraph = line.slice(bullet[0].length);
      }
    }
    splitParagraph(paragraph, sentences);
  }
  return sentences;
}

function splitParagraph(paragraph: string, out: string[]): void {
  let start = 0;
  for (const match of paragraph.matchAll(TERMINATOR)) {
    if (!endsSentence(paragraph, match.index, match[0], match[1] ?? '')) continue;
    const end = match.index + match[0].length;
    pushSentence(paragraph.slice(start, end), out);
    start = end;
  }
  pushSentence(paragraph.slice(start), out);
}

function endsSentence(paragraph: string, at: number, terminator: string, next: string): boolean {
  if (LOWERCASE.test(next)) return false;
  if (terminator[0] !== '.' || terminator.startsWith('..')) return true;
  // Only the last 32 characters are looked at: no abbreviation is longer, and it keeps the scan linear.
  let from = at;
  while (from > 0 && at - from < 32 && !/\s/.test(paragraph[from - 1] ?? ' ')) from--;
  const word = paragraph.slice(from, at).replace(/^[("'“‘[]+/u, '');
  if (LETTER.test(word) || DOTTED.test(word)) return false;
  return !ABBREVIATIONS.has(word.toLowerCase());
}

function pushSentence(raw: string, out: string[]): void {
  const sentence = raw.replace(/\s+/g, ' ').trim();
  if (sentence !== '') out.push(sentence);
}

/** Lowercased word tokens of `text`, and where punctuation separates them (see {@link Sentence}). */
export function tokenize(text: string): { tokens: string[]; breaks: boolean[] } {
  const lower = text.toLowerCase();
  const tokens: string[] = [];
  const breaks: boolean[] = [];
  let previousEnd = -1;
  for (const match of lower.matchAll(WORD)) {
    let token = match[0].includes('’') ? match[0].replaceAll('’', "'") : match[0];
    if (token.endsWith("'s")) token = token.slice(0, -2);
    const gap = previousEnd < 0 ? '' : lower.slice(previousEnd, match.index);
    breaks.push(gap !== ' ' && /\S/.test(gap));
    tokens.push(token);
    previousEnd = match.index + match[0].length;
  }
  return { tokens, breaks };
}

/** Splits and tokenizes a document. */
export function toSentences(text: string): Sentence[] {
  return splitSentences(text).map((sentence, index) => ({ index, text: sentence, ...tokenize(sentence) }));
}

// Function words, auxiliaries and fillers that carry no topic. Negations are here too: they matter
// to sentiment (which reads every token), not to keywords.
export const STOPWORDS: ReadonlySet<string> = new Set(
  `a about above across after again against all almost alone along already also although always am among an and
another any anybody anyone anything anyway anywhere are aren't around as at away be became because become becomes
been before being below beside besides between beyond both but by can cannot can't could couldn't did didn't do
does doesn't doing don't done down during each either else elsewhere enough etc even ever every everybody everyone
everything everywhere few following for from further get gets getting go goes going gone got had hadn't has hasn't have
haven't having he he'd he'll her here hers herself him himself his how however i i'd i'll i'm i've if in include included includes including into
is isn't it it'll its itself just least less let like lot lots made make makes many may maybe me mean means might mine more
most mostly much must mustn't my myself neither never no nobody none nor not nothing now nowhere of off often on
once one ones only onto or other others otherwise ought our ours ourselves out over own per perhaps quite rather
really said same say says see seem seemed seems several shall shan't she she'd she'll should shouldn't since so
some somebody someone something sometimes somewhat somewhere still such than that the their theirs them themselves
then there therefore these they they'd they'll they're they've thing things this those though through throughout
thus to together too toward towards under until up upon us use used uses using very via was wasn't way ways we
we'd we'll we're we've well were weren't what whatever when whenever where whereas wherever whether which while who
whoever whole whom whose why will with within without won't would wouldn't yes yet you you'd you'll you're
you've your yours yourself yourselves`.split(/\s+/),
);
