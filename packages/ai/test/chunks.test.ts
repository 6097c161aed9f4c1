import { describe, expect, it } from 'vitest';
import { AiMetrics, ChunkedAnalyzer, OpenAIProvider, splitText } from '../src/index.ts';
import { startOpenAITestServer } from '../src/testing/index.ts';
import { estimateTextTokens } from '../src/tokens.ts';

const paragraph = (i: number) => `Paragraph ${i} says revenue grew. It also says costs fell! Does churn drop? It did.`;

describe('splitText', () => {
  it('keeps a text that fits whole', () => {
    expect(splitText('Short text.', 100)).toEqual(['Short text.']);
  });

  it('cuts on paragraph boundaries, each chunk within the limit, and gives the text back whole', () => {
    const text = Array.from({ length: 40 }, (_, i) => paragraph(i)).join('\n\n');
    const chunks = splitText(text, 120);
    expect(chunks.length).toBeGreaterThan(4);
    expect(chunks.join('')).toBe(text);
    for (const chunk of chunks) {
      expect(estimateTextTokens(chunk)).toBeLessThanOrEqual(120);
      // Every chunk but the last ends where a paragraph did.
      if (chunk !== chunks.at(-1)) expect(chunk.endsWith('\n\n')).toBe(true);
    }
  });

  it('falls back to sentences, then words, then characters for units longer than a chunk', () => {
    const sentences = Array.from({ length: 30 }, (_, i) => `Sentence number ${i} is here.`).join(' ');
    const bySentence = splitText(sentences, 20);
    expect(bySentence.join('')).toBe(sentences);
    for (const chunk of bySentence) expect(chunk.trimEnd()).toMatch(/\.$/);
    const word = 'x'.repeat(1_000);
    const hard = splitText(word, 50);
    expect(hard.join('')).toBe(word);
    for (const chunk of hard) expect(estimateTextTokens(chunk)).toBeLessThanOrEqual(50);
    // Non-Latin text counts a token per character and is cut on code points.
    const cjk = '数据'.repeat(300);
    expect(splitText(cjk, 100).every((c) => estimateTextTokens(c) <= 100)).toBe(true);
    expect(splitText(cjk, 100).join('')).toBe(cjk);
  });
});

describe('ChunkedAnalyzer', () => {
  it('analyses a long text in chunks plus a combining call, merges them, and says when text was left out', async () => {
    const server = await startOpenAITestServer({ apiKey: 'k' });
    try {
      const provider = new OpenAIProvider({ apiKey: 'k', baseURL: server.baseURL, model: 'm', metrics: new AiMetrics() });
      const text = Array.from({ length: 40 }, (_, i) => paragraph(i)).join('\n\n');
      const whole = new ChunkedAnalyzer(provider, { maxChunkTokens: 200 });
      const progress: string[] = [];
      const result = await whole.analyze({ text, title: 'Report' }, { onProgress: ({ done, total }) => progress.push(`${done}/${total}`) });
      const chunks = whole.plan({ text }).chunks.length;
      expect(result).toMatchObject({ chunks, truncated: false, provider: 'openai', cached: false });
      expect(server.requests).toHaveLength(chunks + 1);
      expect(progress.at(-1)).toBe(`${chunks + 1}/${chunks + 1}`);
      expect(progress).toHaveLength(chunks + 1);
      expect(result.themes[0]?.score).toBe(1);
      expect(result.keywords.length).toBeGreaterThan(0);
      // The estimate covers every call, so a budget reserved with it covers the whole document.
      expect(whole.estimateTokens({ text })).toBeGreaterThan(chunks * provider.estimateTokens({ text: paragraph(0) }));

      server.requests.length = 0;
      const capped = new ChunkedAnalyzer(provider, { maxChunkTokens: 200, maxChunks: 2 });
      expect(await capped.analyze({ text })).toMatchObject({ chunks: 2, truncated: true });
      expect(server.requests).toHaveLength(3);
      // A short text is one call, as before.
      server.requests.length = 0;
      expect(await whole.analyze({ text: paragraph(1) })).toMatchObject({ chunks: 1, truncated: false });
      expect(server.requests).toHaveLength(1);
    } finally {
      await server.close();
    }
  });
});
