import { describe, expect, it } from 'vitest';
import { isAiError } from '../errors.ts';
import type { Embedder } from '../embeddings.ts';
import { analysisOutputSchema, type Analyzer } from '../types.ts';

const text = `Solar panels and wind turbines now produce electricity at record low costs. Energy storage
remains a challenge, but new battery technologies are promising and investors are excited.`;

/**
 * The behaviour every {@link Analyzer} must have; run it against each implementation so none
 * drifts from the others. `create` may return a fresh analyzer per test.
 */
export function describeAnalyzerContract(name: string, create: () => Analyzer | Promise<Analyzer>): void {
  describe(`analyzer contract: ${name}`, () => {
    it('returns an analysis that passes the output schema, with who made it and what it cost', async () => {
      const analyzer = await create();
      const result = await analyzer.analyze({ text, title: 'Renewable energy' }, { tenantId: 'contract' });
      expect(analysisOutputSchema.safeParse(result).success).toBe(true);
      expect(result.provider).toMatch(/\S/);
      expect(result.model).toMatch(/\S/);
      expect(Number.isInteger(result.tokens.prompt) && result.tokens.prompt >= 0).toBe(true);
      expect(Number.isInteger(result.tokens.completion) && result.tokens.completion >= 0).toBe(true);
      expect(typeof result.cached).toBe('boolean');
    });

    it('rejects an empty text as unrecoverable EMPTY_INPUT', async () => {
      const analyzer = await create();
      const error = await analyzer.analyze({ text: ' \n ' }).catch((e: unknown) => e);
      expect(isAiError(error) && error.code === 'EMPTY_INPUT' && error.unrecoverable).toBe(true);
    });

    it('rejects with the reason of an already aborted signal', async () => {
      const analyzer = await create();
      const reason = new Error('stop');
      await expect(analyzer.analyze({ text }, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    });
  });
}

/** The behaviour every {@link Embedder} must have. */
export function describeEmbedderContract(name: string, create: () => Embedder | Promise<Embedder>): void {
  describe(`embedder contract: ${name}`, () => {
    it('returns one vector per text, in order, all of one length', async () => {
      const embedder = await create();
      const vectors = await embedder.embed(['wind power', text, 'battery storage']);
      expect(vectors).toHaveLength(3);
      const length = vectors[0]!.length;
      expect(length).toBeGreaterThan(0);
      for (const vector of vectors) {
        expect(vector).toHaveLength(length);
        expect(vector.every(Number.isFinite)).toBe(true);
      }
      const [again] = await embedder.embed([text]);
      expect(again).toHaveLength(length);
    });

    it('returns nothing for no texts', async () => {
      expect(await (await create()).embed([])).toEqual([]);
    });

    it('rejects an empty text as unrecoverable EMPTY_INPUT', async () => {
      const error = await (await create()).embed(['ok', '']).catch((e: unknown) => e);
      expect(isAiError(error) && error.code === 'EMPTY_INPUT' && error.unrecoverable).toBe(true);
    });
  });
}
