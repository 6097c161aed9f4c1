import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AiMetrics, cosine, createEmbedderFromEnv, OfflineEmbedder, OpenAIEmbedder, type AiError } from '../src/index.ts';
import { describeEmbedderContract, startOpenAITestServer, type OpenAITestServer } from '../src/testing/index.ts';

let server: OpenAITestServer;
beforeAll(async () => {
  server = await startOpenAITestServer();
});
afterAll(() => server.close());
afterEach(() => {
  server.clearFaults();
  server.requests.length = 0;
});

const silent = { info: () => {} };
const openai = (options: { batchSize?: number; metrics?: AiMetrics; dimensions?: number } = {}) =>
  new OpenAIEmbedder({ apiKey: 'sk-test', baseURL: server.baseURL, model: 'text-embedding-3-small', retry: { baseDelayMs: 10 }, ...options });
const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

describeEmbedderContract('offline', () => new OfflineEmbedder());
describeEmbedderContract('openai (test server)', () => openai());

describe('OfflineEmbedder', () => {
  const embedder = new OfflineEmbedder();

  it('gives deterministic, L2-normalised vectors of 256 dimensions', async () => {
    const [a, b] = await embedder.embed(['Wind turbines and solar panels', 'Wind turbines and solar panels']);
    expect(a).toHaveLength(256);
    expect(a).toEqual(b);
    expect(a).toEqual(new OfflineEmbedder().vector('Wind turbines and solar panels'));
    expect(norm(a!)).toBeCloseTo(1, 10);
    expect(embedder.model).toBe('tributary-hash-256');
  });

  it('places texts about the same things closer than unrelated ones', async () => {
    const [energy, batteries, recipe] = await embedder.embed([
      'Solar panels and wind turbines produce cheap renewable electricity; battery storage helps the grid.',
      'New battery storage technologies help the electricity grid absorb renewable solar and wind power.',
      'Whisk the eggs with sugar, fold in the flour and bake the cake for forty minutes.',
    ]);
    expect(cosine(energy!, batteries!)).toBeGreaterThan(cosine(energy!, recipe!) + 0.2);
    expect(cosine(energy!, batteries!)).toBeGreaterThan(0.3);
  });

  it('matches inflected forms through character trigrams', () => {
    const battery = embedder.vector('battery');
    expect(cosine(battery, embedder.vector('batteries'))).toBeGreaterThan(cosine(battery, embedder.vector('sunflower')));
  });

  it('embeds a text with no words as a zero vector', () => {
    expect(norm(embedder.vector('!!! ???'))).toBe(0);
  });

  it('honours its dimensions', async () => {
    expect((await new OfflineEmbedder(64).embed(['hello world']))[0]).toHaveLength(64);
    expect(() => new OfflineEmbedder(3)).toThrow(RangeError);
  });
});

describe('OpenAIEmbedder', () => {
  it('embeds through the embeddings API with the real SDK and counts the tokens', async () => {
    const metrics = new AiMetrics();
    const texts = ['wind power', 'solar power', 'chocolate cake'];
    const vectors = await openai({ metrics }).embed(texts);
    const [request] = server.requests;
    expect(request).toMatchObject({ endpoint: 'embeddings', status: 200, body: { model: 'text-embedding-3-small', input: texts } });
    // The server answers with the offline embedder's vectors (as float32, base64 if the SDK asked so).
    const expected = texts.map((t) => new OfflineEmbedder().vector(t));
    vectors.forEach((v, i) => v.forEach((x, j) => expect(x).toBeCloseTo(expected[i]![j]!, 6)));
    expect(metrics.snapshot().tokensIn).toBeGreaterThan(0);
  });

  it('sends texts in batches and keeps their order', async () => {
    const texts = Array.from({ length: 7 }, (_, i) => `text number ${i} about topic ${i * 13}`);
    const vectors = await openai({ batchSize: 3 }).embed(texts);
    expect(server.requests.map((r) => r.body.input.length)).toEqual([3, 3, 1]);
    vectors.forEach((v, i) => expect(cosine(v, new OfflineEmbedder().vector(texts[i]!))).toBeCloseTo(1, 5));
  });

  it('asks for the configured dimensions', async () => {
    const [vector] = await openai({ dimensions: 32 }).embed(['short']);
    expect(vector).toHaveLength(32);
    expect(server.requests[0]?.body.dimensions).toBe(32);
  });

  it('retries a 429 after its Retry-After, then a 500', async () => {
    server.inject({ type: 'status', status: 429, retryAfter: '0.2' }, { endpoint: 'embeddings' });
    server.inject({ type: 'status', status: 500 }, { endpoint: 'embeddings' });
    const metrics = new AiMetrics();
    await openai({ metrics }).embed(['retry me']);
    expect(server.requests.map((r) => r.status)).toEqual([429, 500, 200]);
    expect(server.requests[1]!.receivedAt - server.requests[0]!.receivedAt).toBeGreaterThanOrEqual(180);
    expect(metrics.snapshot().retries).toBe(2);
  });

  it('gives up with a transient error when the provider keeps failing', async () => {
    server.inject({ type: 'status', status: 503 }, { times: Infinity });
    const error = (await openai().embed(['x']).catch((e: unknown) => e)) as AiError;
    expect(error).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', unrecoverable: false });
    expect(server.requests).toHaveLength(3);
  });
});

describe('createEmbedderFromEnv', () => {
  it('embeds offline without OPENAI_API_KEY', () => {
    expect(createEmbedderFromEnv({}, { logger: silent })).toBeInstanceOf(OfflineEmbedder);
  });

  it('embeds with AI_EMBEDDING_MODEL through OPENAI_BASE_URL with a key', async () => {
    const embedder = createEmbedderFromEnv({ OPENAI_API_KEY: 'sk', OPENAI_BASE_URL: server.baseURL, AI_EMBEDDING_MODEL: 'nomic-embed-text' }, { logger: silent });
    expect(embedder).toMatchObject({ provider: 'openai', model: 'nomic-embed-text' });
    await embedder.embed(['hello']);
    expect(server.requests[0]?.body.model).toBe('nomic-embed-text');
  });
});

describe('cosine', () => {
  it('is 1 for the same direction, 0 for orthogonal, -1 for opposite vectors', () => {
    expect(cosine([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(cosine([1, 0], [0, 5])).toBe(0);
    expect(cosine([1, -2], [-1, 2])).toBeCloseTo(-1, 12);
  });

  it('is 0 when a vector is all zeros', () => {
    expect(cosine([0, 0, 0], [1, 2, 3])).toBe(0);
  });

  it('refuses vectors of different lengths', () => {
    expect(() => cosine([1, 2], [1, 2, 3])).toThrow(RangeError);
  });
});
