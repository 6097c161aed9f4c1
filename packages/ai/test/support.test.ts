import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  AiError,
  AiMetrics,
  analysisJsonSchema,
  backoffDelay,
  defaultRetryPolicy,
  isTransientAiError,
  loadAiConfig,
  parseRetryAfter,
  providersFromEnv,
  toStrictJsonSchema,
} from '../src/index.ts';

const headers = (entries: Record<string, string>) => new Headers(entries);

describe('parseRetryAfter', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');

  it('reads delay-seconds, fractions included', () => {
    expect(parseRetryAfter(headers({ 'retry-after': '3' }), now)).toBe(3_000);
    expect(parseRetryAfter(headers({ 'retry-after': '0.25' }), now)).toBe(250);
  });

  it('reads an HTTP date, and a date in the past as no wait', () => {
    expect(parseRetryAfter(headers({ 'retry-after': 'Tue, 01 Jan 2030 00:00:07 GMT' }), now)).toBe(7_000);
    expect(parseRetryAfter(headers({ 'retry-after': 'Mon, 31 Dec 2029 23:00:00 GMT' }), now)).toBe(0);
  });

  it("prefers OpenAI's retry-after-ms", () => {
    expect(parseRetryAfter(headers({ 'retry-after-ms': '120', 'retry-after': '5' }), now)).toBe(120);
  });

  it('ignores a missing or unreadable header', () => {
    expect(parseRetryAfter(headers({}), now)).toBeUndefined();
    expect(parseRetryAfter(headers({ 'retry-after': 'soon' }), now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

describe('backoffDelay', () => {
  it('doubles up to the cap, with jitter in the upper half', () => {
    const policy = (r: number) => ({ ...defaultRetryPolicy, baseDelayMs: 100, maxDelayMs: 1_000, random: () => r });
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy(0)))).toEqual([50, 100, 200, 400, 500]);
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy(0.999)))).toEqual([100, 200, 400, 800, 1_000]);
  });
});

describe('toStrictJsonSchema', () => {
  it('closes every object and requires every property, as strict structured outputs demand', () => {
    const schema = toStrictJsonSchema(z.object({ a: z.string().max(5), b: z.array(z.object({ c: z.number() })) }));
    expect(schema).toEqual({
      type: 'object',
      properties: {
        a: { type: 'string', description: 'at most 5 characters' },
        b: { type: 'array', items: { type: 'object', properties: { c: { type: 'number' } }, required: ['c'], additionalProperties: false } },
      },
      required: ['a', 'b'],
      additionalProperties: false,
    });
  });

  it('refuses an optional property, which strict mode cannot express', () => {
    expect(() => toStrictJsonSchema(z.object({ a: z.string().optional() }))).toThrow(/optional/);
  });

  it('keeps the analysis limits a model can follow: enums, ranges, item counts', () => {
    expect(analysisJsonSchema).toMatchObject({
      properties: {
        themes: { maxItems: 10 },
        sentiment: { properties: { label: { enum: ['POSITIVE', 'NEUTRAL', 'NEGATIVE'] }, score: { minimum: -1, maximum: 1 } } },
      },
    });
  });
});

describe('AiError', () => {
  it('says per code whether retrying can help', () => {
    expect(new AiError('RATE_LIMITED', 'x').unrecoverable).toBe(false);
    expect(new AiError('TIMEOUT', 'x').unrecoverable).toBe(false);
    expect(new AiError('PROVIDER_UNAVAILABLE', 'x').unrecoverable).toBe(false);
    expect(new AiError('INVALID_OUTPUT', 'x').unrecoverable).toBe(true);
    expect(new AiError('BUDGET_EXCEEDED', 'x').unrecoverable).toBe(true);
    expect(new AiError('PROVIDER_REJECTED', 'x').unrecoverable).toBe(true);
    expect(isTransientAiError(new AiError('TIMEOUT', 'x'))).toBe(true);
    expect(isTransientAiError(new Error('x'))).toBe(false);
  });
});

describe('AiMetrics', () => {
  it('counts, snapshots, notifies and resets', () => {
    const metrics = new AiMetrics();
    const seen: string[] = [];
    const stop = metrics.onIncrement((name, by) => seen.push(`${name}+${by}`));
    metrics.increment('tokensIn', 12);
    metrics.increment('cacheHits');
    stop();
    metrics.increment('cacheHits');
    const snapshot = metrics.snapshot();
    expect(snapshot).toEqual({ tokensIn: 12, tokensOut: 0, cacheHits: 2, cacheMisses: 0, fallbacks: 0, budgetRefusals: 0, retries: 0 });
    expect(seen).toEqual(['tokensIn+12', 'cacheHits+1']);
    metrics.reset();
    expect(metrics.snapshot().cacheHits).toBe(0);
    expect(snapshot.cacheHits).toBe(2);
  });
});

describe('loadAiConfig', () => {
  it('fills in the documented defaults', () => {
    expect(loadAiConfig({})).toEqual({
      AI_MODEL: 'gpt-4o-mini',
      AI_EMBEDDING_MODEL: 'text-embedding-3-small',
      AI_DAILY_TOKEN_BUDGET: 1_000_000,
      AI_TIMEOUT_MS: 30_000,
      AI_BUDGET_FALLBACK: 'none',
      AI_MAX_CHUNK_TOKENS: 6_000,
      AI_MAX_CHUNKS: 64,
    });
  });

  it('treats an empty value as unset', () => {
    expect(loadAiConfig({ OPENAI_API_KEY: '', AI_MODEL: '' })).toMatchObject({ AI_MODEL: 'gpt-4o-mini' });
    expect(loadAiConfig({ OPENAI_API_KEY: '' }).OPENAI_API_KEY).toBeUndefined();
  });
});

describe('providersFromEnv', () => {
  it('keeps the single-provider settings: one openai provider from OPENAI_API_KEY, none without a key', () => {
    expect(providersFromEnv({})).toEqual([]);
    expect(providersFromEnv({ OPENAI_API_KEY: 'sk', OPENAI_BASE_URL: 'http://localhost:11434/v1', AI_MODEL: 'llama', AI_MAX_REQUESTS_PER_MINUTE: '60' })).toEqual([
      { name: 'openai', apiKey: 'sk', baseURL: 'http://localhost:11434/v1', model: 'llama', limits: { requests: 60 } },
    ]);
  });

  it('reads AI_PROVIDERS in order, each with its own settings and limits (the global ones as defaults)', () => {
    const env = {
      AI_PROVIDERS: 'openai,local',
      AI_MODEL: 'gpt-4o-mini',
      AI_MAX_TOKENS_PER_MINUTE: '100000',
      AI_OPENAI_API_KEY: 'sk-1',
      AI_OPENAI_MAX_REQUESTS_PER_MINUTE: '500',
      AI_LOCAL_API_KEY: 'none',
      AI_LOCAL_BASE_URL: 'http://vllm:8000/v1',
      AI_LOCAL_MODEL: 'qwen',
      AI_LOCAL_MAX_TOKENS_PER_MINUTE: '5000',
    };
    expect(providersFromEnv(env)).toEqual([
      { name: 'openai', apiKey: 'sk-1', baseURL: undefined, model: 'gpt-4o-mini', limits: { requests: 500, tokens: 100_000 } },
      { name: 'local', apiKey: 'none', baseURL: 'http://vllm:8000/v1', model: 'qwen', limits: { tokens: 5_000 } },
    ]);
  });

  it('names every bad setting at once', () => {
    expect(() => providersFromEnv({ AI_PROVIDERS: 'a,b', AI_B_API_KEY: 'k', AI_B_BASE_URL: 'ftp://x', AI_B_MAX_REQUESTS_PER_MINUTE: '0' })).toThrow(
      /AI_A_API_KEY[\s\S]*AI_B_BASE_URL[\s\S]*AI_B_MAX_REQUESTS_PER_MINUTE/,
    );
    expect(() => loadAiConfig({ AI_PROVIDERS: 'Open AI' })).toThrow(/AI_PROVIDERS/);
    expect(() => loadAiConfig({ AI_PROVIDERS: 'a,a' })).toThrow(/AI_PROVIDERS.*twice/);
    expect(() => loadAiConfig({ REDIS_URL: 'http://redis:6379' })).toThrow(/REDIS_URL/);
  });
});
