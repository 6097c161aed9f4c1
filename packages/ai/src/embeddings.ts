import { AiError } from './errors.ts';
import { STOPWORDS, tokenize } from './offline/text.ts';

/** One interface, several implementations (OpenAI embeddings API, offline hashing). */
export interface Embedder {
  /** e.g. `offline`, `openai`. */
  readonly provider: string;
  readonly model: string;
  /**
   * One vector per text, in order, all of the same length. Vectors of different models are not
   * comparable: store `provider`/`model` with them.
   * @throws {AiError} `EMPTY_INPUT` when a text is empty or whitespace only; the provider codes otherwise.
   */
  embed(texts: readonly string[], options?: { signal?: AbortSignal }): Promise<number[][]>;
}

/** Rejects empty texts the same way in every embedder (the OpenAI API answers 400 to them). */
export function assertEmbeddable(texts: readonly string[]): void {
  const empty = texts.findIndex((text) => text.trim() === '');
  if (empty >= 0) throw new AiError('EMPTY_INPUT', `Nothing to embed: text ${empty} is empty`);
}

/**
 * Cosine similarity of two vectors, in [-1, 1]; 0 when either is all zeros.
 * @throws RangeError when the lengths differ (vectors of different models).
 */
export function cosine(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new RangeError(`cosine: vectors of length ${a.length} and ${b.length}`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return 0;
  return Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb)));
}

/** FNV-1a, 32 bits, over UTF-16 code units: fast, stable across runs and platforms. */
function fnv1a(text: string, seed = 0x811c9dc5): number {
  let hash = seed;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * Embeds offline by feature hashing: content words and their character trigrams, each hashed to a
 * dimension with a hashed sign (so collisions cancel out rather than pile up), counts damped with
 * `1 + log(count)`, then L2-normalised. Deterministic, no network; texts sharing vocabulary and
 * word forms score high under {@link cosine}, synonyms do not.
 */
export class OfflineEmbedder implements Embedder {
  readonly provider = 'offline';
  readonly model: string;

  /** @param dimensions vector length, default 256. */
  constructor(readonly dimensions = 256) {
    if (!Number.isInteger(dimensions) || dimensions < 8) throw new RangeError('OfflineEmbedder: dimensions must be an integer >= 8');
    this.model = `tributary-hash-${dimensions}`;
  }

  async embed(texts: readonly string[], options: { signal?: AbortSignal } = {}): Promise<number[][]> {
    options.signal?.throwIfAborted();
    assertEmbeddable(texts);
    return texts.map((text) => this.vector(text));
  }

  /** The vector of one text (all zeros when it has no words). */
  vector(text: string): number[] {
    const counts = new Map<string, number>();
    const add = (feature: string) => counts.set(feature, (counts.get(feature) ?? 0) + 1);
    const words = tokenize(text.normalize('NFC')).tokens;
    // A text of nothing but function words still deserves a vector.
    const content = words.some((w) => !STOPWORDS.has(w)) ? words.filter((w) => !STOPWORDS.has(w)) : words;
    for (const word of content) {
      add(`w:${word}`);
      const padded = ` ${word} `;
      for (let i = 0; i + 3 <= padded.length; i++) add(`c:${padded.slice(i, i + 3)}`);
    }
    const vector = new Array<number>(this.dimensions).fill(0);
    for (const [feature, count] of counts) {
      const hash = fnv1a(feature);
      const sign = fnv1a(feature, 0x9747b28c) & 1 ? 1 : -1;
      // Trigrams match inflections and compounds (`battery`/`batteries`), at half a word's weight.
      const weight = feature.startsWith('w:') ? 1 : 0.5;
      vector[hash % this.dimensions]! += sign * weight * (1 + Math.log(count));
    }
    const norm = Math.sqrt(vector.reduce((sum, x) => sum + x * x, 0));
    return norm === 0 ? vector : vector.map((x) => x / norm);
  }
}
