import { describe, expect, it } from 'vitest';
import { AiError, analysisOutputSchema, analyzeOffline, isAiError, OfflineAnalyzer, type AnalysisOutput } from '../src/index.ts';
import { splitSentences, STOPWORDS, tokenize } from '../src/offline/text.ts';

const article = `Renewable energy is transforming the global power sector. Solar panels and wind turbines now produce
electricity at record low costs. Dr. Smith, a researcher at the U.S. Department of Energy, said the cost of solar
panels fell by 3.5 percent in 2023.

Energy storage remains a challenge. Without cheap energy storage, renewable energy cannot fully replace fossil fuels.
However, new battery technologies are very promising and investors are excited.
- Grid operators report fewer outages.
- Renewable energy jobs grew strongly.

Critics warn of risks, but the overall outlook for renewable energy is excellent.`;

const positive = 'I love this phone. The camera is excellent, the battery life is great and the screen is beautiful.';
const negative = 'The update was a disaster. The app crashes constantly, support was rude and the new design is terrible.';
const neutral = 'The meeting is scheduled for Tuesday at the main office. The agenda covers the quarterly budget and staffing.';

const analyzer = new OfflineAnalyzer();
const normalize = (text: string) => text.replace(/\s+/g, ' ');

function expectValid(output: AnalysisOutput): void {
  expect(analysisOutputSchema.safeParse(output).success).toBe(true);
}

describe('OfflineAnalyzer', () => {
  it('gives the same analysis for the same text', async () => {
    const first = await analyzer.analyze({ text: article, title: 'The rise of renewable energy' });
    const second = await new OfflineAnalyzer().analyze({ text: article, title: 'The rise of renewable energy' });
    expect(JSON.stringify(second)).toBe(JSON.stringify(first));
  });

  it('reports itself as the offline provider that spends no tokens', async () => {
    const result = await analyzer.analyze({ text: positive });
    expect(result).toMatchObject({ provider: 'offline', model: 'tributary-offline-1', tokens: { prompt: 0, completion: 0 }, cached: false });
  });

  it('produces output that validates against the analysis output schema', () => {
    for (const text of [article, positive, negative, neutral, 'ok', '!!! ???', 'x'.repeat(5000)]) {
      expectValid(analyzeOffline({ text }));
    }
  });

  it('rejects empty and whitespace-only text with an unrecoverable EMPTY_INPUT error', async () => {
    for (const text of ['', '   \n\t  ']) {
      const error: unknown = await analyzer.analyze({ text }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AiError);
      expect(isAiError(error)).toBe(true);
      expect(error).toMatchObject({ name: 'AiError', code: 'EMPTY_INPUT', unrecoverable: true });
    }
  });

  it('rejects with the abort reason when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort(new Error('shutting down'));
    await expect(analyzer.analyze({ text: positive }, { signal: controller.signal })).rejects.toThrow('shutting down');
  });

  // Behaviour, not timing (house style): a document at the upload limit completes well inside
  // the test timeout; it takes 100-260 ms on this kind of machine.
  it('analyses a document at the 1 MiB upload limit', { timeout: 10_000 }, () => {
    const text = article.repeat(Math.ceil((1 << 20) / article.length)).slice(0, 1 << 20);
    expectValid(analyzeOffline({ text }));
  });

  it('analyses German and French text with accents', () => {
    const text =
      'Die Qualität der Äpfel aus dem Süden ist großartig. Die Äpfel schmecken süß.\n\n' +
      'Les élèves étudient à l’école près de la forêt. Ça va très bien, merci!';
    const output = analyzeOffline({ text, title: 'Äpfel' });
    expectValid(output);
    expect(output.keywords.join(' ')).toContain('äpfel');
    expect(output.summary.length).toBeGreaterThan(0);
  });

  it('treats a decomposed accent like the precomposed letter', () => {
    const composed = analyzeOffline({ text: 'Le café est prêt. Le café est chaud.' });
    const decomposed = analyzeOffline({ text: 'Le café est prêt. Le café est chaud.'.normalize('NFD') });
    expect(decomposed.keywords).toEqual(composed.keywords);
  });
});

describe('offline sentiment', () => {
  it('labels a glowing review positive', () => {
    const { sentiment } = analyzeOffline({ text: positive });
    expect(sentiment.label).toBe('POSITIVE');
    expect(sentiment.score).toBeGreaterThan(0.5);
  });

  it('labels a complaint negative', () => {
    const { sentiment } = analyzeOffline({ text: negative });
    expect(sentiment.label).toBe('NEGATIVE');
    expect(sentiment.score).toBeLessThan(-0.5);
  });

  it('labels a factual text neutral with a score of zero', () => {
    expect(analyzeOffline({ text: neutral }).sentiment).toEqual({ label: 'NEUTRAL', score: 0 });
  });

  it('flips the polarity of a negated word', () => {
    expect(analyzeOffline({ text: 'The food was good.' }).sentiment.label).toBe('POSITIVE');
    expect(analyzeOffline({ text: 'The food was not good.' }).sentiment.label).toBe('NEGATIVE');
    expect(analyzeOffline({ text: "The food wasn't bad at all." }).sentiment.label).toBe('POSITIVE');
    expect(analyzeOffline({ text: 'The service was never slow.' }).sentiment.label).toBe('POSITIVE');
  });

  it('negates only within three tokens and within the sentence', () => {
    expect(analyzeOffline({ text: 'Not that the other restaurant we tried was good.' }).sentiment.label).toBe('POSITIVE');
    expect(analyzeOffline({ text: 'It was not. Good food though.' }).sentiment.label).toBe('POSITIVE');
  });

  it('weighs an intensified word more than a plain one', () => {
    const plain = analyzeOffline({ text: 'The hotel was good.' }).sentiment.score;
    const intensified = analyzeOffline({ text: 'The hotel was very good.' }).sentiment.score;
    const diminished = analyzeOffline({ text: 'The hotel was slightly good.' }).sentiment.score;
    expect(intensified).toBeGreaterThan(plain);
    expect(diminished).toBeLessThan(plain);
  });

  it('keeps the score within [-1, 1] however much evidence there is', () => {
    const score = (text: string) => analyzeOffline({ text }).sentiment.score;
    expect(score('Excellent! '.repeat(10_000))).toBeLessThanOrEqual(1);
    expect(score('Terrible! '.repeat(10_000))).toBeGreaterThanOrEqual(-1);
  });
});

describe('offline summary', () => {
  it('is made of up to three original sentences, in document order, within 400 characters', () => {
    const { summary } = analyzeOffline({ text: article, title: 'The rise of renewable energy' });
    const original = splitSentences(article);
    const picked = splitSentences(summary);
    expect(summary.length).toBeLessThanOrEqual(400);
    expect(picked.length).toBeGreaterThan(0);
    expect(picked.length).toBeLessThanOrEqual(3);
    const positions = picked.map((sentence) => original.indexOf(sentence));
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(normalize(article)).toContain(picked[0]);
  });

  it('cuts a single overlong sentence at a word boundary and ends it with an ellipsis', () => {
    const words = Array.from({ length: 200 }, (_, i) => `word${i}`);
    const { summary } = analyzeOffline({ text: `${words.join(' ')}.` });
    expect(summary.length).toBeLessThanOrEqual(400);
    expect(summary.endsWith('…')).toBe(true);
    expect(words).toContain(summary.slice(0, -1).split(' ').at(-1));
  });

  it('returns a short text whole', () => {
    expect(analyzeOffline({ text: '  Short note.  ' }).summary).toBe('Short note.');
  });
});

describe('offline themes and keywords', () => {
  const output = analyzeOffline({ text: article, title: 'The rise of renewable energy' });

  it('scores at most five themes in [0, 1], strongest first, ties by name', () => {
    expect(output.themes.length).toBeGreaterThan(0);
    expect(output.themes.length).toBeLessThanOrEqual(5);
    expect(output.themes[0]?.score).toBe(1);
    for (const theme of output.themes) {
      expect(theme.score).toBeGreaterThanOrEqual(0);
      expect(theme.score).toBeLessThanOrEqual(1);
    }
    const sorted = [...output.themes].sort((a, b) => b.score - a.score || (a.name < b.name ? -1 : 1));
    expect(output.themes).toEqual(sorted);
  });

  it('orders tied themes by name', () => {
    const { themes } = analyzeOffline({ text: 'Zebras run. Apples fall. Mangoes ripen.' });
    expect(themes.map((t) => t.name)).toEqual(['apples fall', 'mangoes ripen', 'zebras run']);
    expect(themes.every((t) => t.score === 1)).toBe(true);
  });

  it('finds the phrase the document keeps coming back to', () => {
    expect(output.themes[0]?.name).toBe('renewable energy');
    expect(output.keywords[0]).toBe('renewable energy');
    expect(output.keywords).toContain('solar panels');
  });

  it('gives at most ten distinct lowercase keywords without stopwords', () => {
    expect(output.keywords.length).toBeGreaterThan(0);
    expect(output.keywords.length).toBeLessThanOrEqual(10);
    expect(new Set(output.keywords).size).toBe(output.keywords.length);
    for (const keyword of output.keywords) {
      expect(keyword).toBe(keyword.toLowerCase());
      expect(keyword.split(' ').length).toBeLessThanOrEqual(3);
      for (const word of keyword.split(' ')) expect(STOPWORDS.has(word)).toBe(false);
    }
  });

  it('has no keywords or themes for a text made only of stopwords', () => {
    const output = analyzeOffline({ text: 'It is what it is, and that is that.' });
    expect(output).toMatchObject({ keywords: [], themes: [] });
    expectValid(output);
  });
});

describe('sentence splitting and tokenization', () => {
  it('does not split at abbreviations, initials, decimals or domains', () => {
    expect(splitSentences('Dr. Smith paid $3.50 at example.com. J. R. R. Tolkien wrote e.g. novels. It was approx. five.')).toEqual([
      'Dr. Smith paid $3.50 at example.com.',
      'J. R. R. Tolkien wrote e.g. novels.',
      'It was approx. five.',
    ]);
  });

  it('ends sentences at blank lines and list items but joins hard-wrapped lines', () => {
    expect(splitSentences('Heading\n\nThe first line\nwraps here.\n- item one\n- item two\r\n\r\nLast words!')).toEqual([
      'Heading',
      'The first line wraps here.',
      'item one',
      'item two',
      'Last words!',
    ]);
  });

  it('splits at question marks, exclamation marks, ellipses and CJK stops', () => {
    expect(splitSentences('Really? Yes! He left... Then he came back. 東京は大きい。人口が多い！')).toEqual([
      'Really?',
      'Yes!',
      'He left...',
      'Then he came back.',
      '東京は大きい。',
      '人口が多い！',
    ]);
  });

  it('lowercases words, keeps inner apostrophes and hyphens, drops possessives and marks punctuation', () => {
    expect(tokenize("The Company’s state-of-the-art tools don't break; Ünïcödé wins.")).toEqual({
      tokens: ['the', 'company', 'state-of-the-art', 'tools', "don't", 'break', 'ünïcödé', 'wins'],
      breaks: [false, false, false, false, false, false, true, false],
    });
  });
});
