import { isUnrecoverable } from '@tributary/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AiMetrics, ChainAnalyzer, isAiError, OfflineAnalyzer, OpenAIProvider, type AiError, type OpenAIProviderOptions, type RetryPolicy } from '../src/index.ts';
import { describeAnalyzerContract, startOpenAITestServer, type OpenAITestServer } from '../src/testing/index.ts';

const text = `Renewable energy is transforming the global power sector. Solar panels and wind turbines now produce
electricity at record low costs. Energy storage remains a challenge, but new battery technologies are promising.`;

let server: OpenAITestServer;
let backup: OpenAITestServer;
beforeAll(async () => {
  [server, backup] = await Promise.all([startOpenAITestServer({ apiKey: 'sk-test' }), startOpenAITestServer({ apiKey: 'sk-test' })]);
});
afterAll(async () => {
  await Promise.all([server.close(), backup.close()]);
});
afterEach(() => {
  server.clearFaults();
  backup.clearFaults();
  server.requests.length = 0;
  backup.requests.length = 0;
});

const fast: RetryPolicy = { baseDelayMs: 10, maxDelayMs: 50 };
const provider = (options: Partial<OpenAIProviderOptions> = {}, metrics = new AiMetrics()) =>
  new OpenAIProvider({ apiKey: 'sk-test', baseURL: server.baseURL, model: 'gpt-test', metrics, ...options });
const chatRequests = (s: OpenAITestServer) => s.requests.filter((r) => r.endpoint === 'chat');
const failure = (promise: Promise<unknown>) => promise.then(() => expect.fail('expected a rejection'), (error: unknown) => error as AiError);

describeAnalyzerContract('offline', () => new OfflineAnalyzer());
describeAnalyzerContract('openai (test server)', () => provider());
describeAnalyzerContract('chain of openai providers (test server)', () => new ChainAnalyzer([provider()], { retry: fast, metrics: new AiMetrics() }));

describe('OpenAIProvider', () => {
  it('asks for strict structured output with a JSON schema made from the output contract', async () => {
    await provider({ maxCompletionTokens: 700 }).analyze({ text, title: 'Energy' });
    const [request] = chatRequests(server);
    expect(request?.authorization).toBe('Bearer sk-test');
    expect(request?.body).toMatchObject({ model: 'gpt-test', max_completion_tokens: 700, response_format: { type: 'json_schema', json_schema: { strict: true } } });
    const schema = request?.body.response_format.json_schema.schema;
    expect(schema).toMatchObject({ type: 'object', additionalProperties: false, required: ['summary', 'themes', 'keywords', 'sentiment'] });
    expect(schema.properties.sentiment).toMatchObject({ additionalProperties: false, required: ['label', 'score'] });
    expect(JSON.stringify(schema)).not.toMatch(/"(minLength|maxLength|\$schema)"/);
    expect(schema.properties.summary).toEqual({ type: 'string', description: '1 to 2000 characters' });
    expect(request?.body.messages[1].content).toContain('Title: Energy');
  });

  it('returns the validated analysis with tokens taken from usage', async () => {
    const metrics = new AiMetrics();
    const result = await provider({}, metrics).analyze({ text });
    expect(result).toMatchObject({ provider: 'openai', model: 'gpt-test', cached: false });
    expect(result.keywords.length).toBeGreaterThan(0);
    expect(result.tokens.prompt).toBeGreaterThan(0);
    expect(result.tokens.completion).toBeGreaterThan(0);
    expect(metrics.snapshot()).toMatchObject({ tokensIn: result.tokens.prompt, tokensOut: result.tokens.completion });
  });

  it('estimates at least the tokens a call really spends', async () => {
    const analyzer = provider();
    for (const input of [{ text }, { text: 'Ünïcödé ✓ 日本語のテキストです。'.repeat(40) }]) {
      const result = await analyzer.analyze(input);
      expect(analyzer.estimateTokens(input)).toBeGreaterThanOrEqual(result.tokens.prompt + result.tokens.completion);
    }
  });

  it('gives equal requests equal cache keys, and different models or texts different ones', () => {
    expect(provider().cacheKey({ text })).toBe(provider().cacheKey({ text }));
    expect(provider({ model: 'other' }).cacheKey({ text })).not.toBe(provider().cacheKey({ text }));
    expect(provider().cacheKey({ text: `${text}!` })).not.toBe(provider().cacheKey({ text }));
    expect(provider({ name: 'azure' }).cacheKey({ text })).not.toBe(provider().cacheKey({ text }));
  });

  it('retries an invalid JSON reply once and then returns the valid one, counting both calls', async () => {
    server.inject({ type: 'invalid-json' });
    const metrics = new AiMetrics();
    const result = await provider({}, metrics).analyze({ text });
    expect(chatRequests(server)).toHaveLength(2);
    expect(metrics.snapshot().retries).toBe(1);
    const single = await provider().analyze({ text });
    expect(result.tokens.prompt).toBe(2 * single.tokens.prompt);
  });

  it('fails with unrecoverable INVALID_OUTPUT after a second invalid reply, reporting the tokens spent', async () => {
    server.inject({ type: 'invalid-json' });
    server.inject({ type: 'schema-violation' });
    const error = await failure(provider().analyze({ text }));
    expect(isAiError(error) && error.code).toBe('INVALID_OUTPUT');
    expect(error.unrecoverable).toBe(true);
    expect(isUnrecoverable(error)).toBe(true);
    expect(error.message).toMatch(/schema/);
    expect(error.tokens?.prompt).toBeGreaterThan(0);
    expect(chatRequests(server)).toHaveLength(2);
  });

  it('treats a reply cut at the token cap as invalid output', async () => {
    const error = await failure(provider({ maxCompletionTokens: 5 }).analyze({ text }));
    expect(error.code).toBe('INVALID_OUTPUT');
    expect(error.message).toMatch(/max_completion_tokens/);
  });

  it('fails a rejected request (bad API key) as unrecoverable PROVIDER_REJECTED', async () => {
    const error = await failure(provider({ apiKey: 'sk-wrong' }).analyze({ text }));
    expect(error.code).toBe('PROVIDER_REJECTED');
    expect(error.unrecoverable).toBe(true);
  });

  it('times out on a slow reply with a transient TIMEOUT', async () => {
    server.inject({ type: 'delay', ms: 3_000 });
    const started = Date.now();
    const error = await failure(provider({ timeoutMs: 200 }).analyze({ text }));
    expect(error.code).toBe('TIMEOUT');
    expect(error.unrecoverable).toBe(false);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("rejects with the caller's abort reason while waiting for a reply", async () => {
    server.inject({ type: 'delay', ms: 3_000 });
    const controller = new AbortController();
    const reason = new Error('shutting down');
    setTimeout(() => controller.abort(reason), 100);
    await expect(provider().analyze({ text }, { signal: controller.signal })).rejects.toBe(reason);
  });
});

describe('ChainAnalyzer', () => {
  const chain = (providers: OpenAIProvider[], retry: RetryPolicy = fast, metrics = new AiMetrics()) => new ChainAnalyzer(providers, { retry, metrics });

  it('retries after a 500 and then succeeds', async () => {
    server.inject({ type: 'status', status: 500 });
    const metrics = new AiMetrics();
    const result = await chain([provider()], fast, metrics).analyze({ text });
    expect(result.provider).toBe('openai');
    expect(chatRequests(server).map((r) => r.status)).toEqual([500, 200]);
    expect(metrics.snapshot()).toMatchObject({ retries: 1, fallbacks: 0 });
  });

  it('retries after a dropped connection', async () => {
    server.inject({ type: 'disconnect' });
    await chain([provider()]).analyze({ text });
    expect(chatRequests(server).map((r) => r.fault ?? r.status)).toEqual(['disconnect', 200]);
  });

  it('honors Retry-After on a 429 before retrying', async () => {
    server.inject({ type: 'status', status: 429, retryAfter: '1' });
    const started = Date.now();
    await chain([provider()]).analyze({ text });
    const [limited, retried] = chatRequests(server);
    expect(limited?.status).toBe(429);
    expect(retried!.receivedAt - limited!.receivedAt).toBeGreaterThanOrEqual(950);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('gives up on a provider at once when its Retry-After is beyond the cap', async () => {
    server.inject({ type: 'status', status: 429, retryAfter: '120' });
    const error = await failure(chain([provider()], { ...fast, maxRetryAfterMs: 5_000 }).analyze({ text }));
    expect(error.code).toBe('RATE_LIMITED');
    expect(error.retryAfterMs).toBe(120_000);
    expect(error.unrecoverable).toBe(false);
    expect(chatRequests(server)).toHaveLength(1);
  });

  it('retries a timeout and succeeds when the next reply is in time', async () => {
    server.inject({ type: 'delay', ms: 3_000 });
    const result = await chain([provider({ timeoutMs: 300 })]).analyze({ text });
    expect(result.summary).not.toBe('');
    expect(chatRequests(server)).toHaveLength(2);
  });

  it('falls back to the next provider when one keeps failing', async () => {
    server.inject({ type: 'status', status: 503 }, { times: Infinity });
    const metrics = new AiMetrics();
    const secondary = provider({ name: 'secondary', baseURL: backup.baseURL, model: 'backup-model' });
    const result = await chain([provider({ name: 'primary' }), secondary], { ...fast, maxAttempts: 3 }, metrics).analyze({ text });
    expect(result).toMatchObject({ provider: 'secondary', model: 'backup-model' });
    expect(chatRequests(server)).toHaveLength(3);
    expect(chatRequests(backup)).toHaveLength(1);
    expect(metrics.snapshot()).toMatchObject({ retries: 2, fallbacks: 1 });
  });

  it('throws the last transient error when every provider keeps failing', async () => {
    server.inject({ type: 'status', status: 500 }, { times: Infinity });
    backup.inject({ type: 'status', status: 429 }, { times: Infinity });
    const error = await failure(chain([provider(), provider({ name: 'secondary', baseURL: backup.baseURL })], { ...fast, maxAttempts: 2 }).analyze({ text }));
    expect(error).toMatchObject({ code: 'RATE_LIMITED', provider: 'secondary', unrecoverable: false });
    expect(chatRequests(server)).toHaveLength(2);
    expect(chatRequests(backup)).toHaveLength(2);
  });

  it('does not fall back on invalid output: it is unrecoverable INVALID_OUTPUT', async () => {
    server.inject({ type: 'schema-violation' }, { times: 2 });
    const error = await failure(chain([provider(), provider({ name: 'secondary', baseURL: backup.baseURL })]).analyze({ text }));
    expect(error.code).toBe('INVALID_OUTPUT');
    expect(error.unrecoverable).toBe(true);
    expect(chatRequests(backup)).toHaveLength(0);
  });

  it('stops backing off when the caller aborts', async () => {
    server.inject({ type: 'status', status: 500 }, { times: Infinity });
    const controller = new AbortController();
    const reason = new Error('shutting down');
    setTimeout(() => controller.abort(reason), 200);
    const started = Date.now();
    await expect(chain([provider()], { baseDelayMs: 5_000, maxDelayMs: 5_000 }).analyze({ text }, { signal: controller.signal })).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
