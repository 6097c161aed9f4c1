import { ConfigError, createLogger, isUnrecoverable } from '@tributary/core';
import { openDatabase, type Database } from '@tributary/core/db';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  aiEntities,
  AiMetrics,
  aiMigrations,
  ChainAnalyzer,
  createAnalyzerFromEnv,
  GuardedAnalyzer,
  isAiError,
  OfflineAnalyzer,
  OpenAIProvider,
  TokenLedger,
  utcDay,
  type AiError,
  type GuardedAnalyzerOptions,
} from '../src/index.ts';
import { describeAnalyzerContract, startOpenAITestServer, type OpenAITestServer } from '../src/testing/index.ts';

// Embedded PGlite: the same SQL as PostgreSQL, no server needed. The race is tested on the real
// server in budget.int.test.ts.
let db: Database;
let server: OpenAITestServer;
beforeAll(async () => {
  [db, server] = await Promise.all([
    openDatabase({
      service: 'ai_test',
      target: { kind: 'pglite', dataDir: 'memory://' },
      entities: aiEntities,
      migrations: aiMigrations,
      logger: createLogger({ service: 'ai_test', level: 'silent' }),
    }),
    startOpenAITestServer(),
  ]);
});
afterAll(async () => {
  await Promise.all([db?.close(), server?.close()]);
});
afterEach(() => {
  server.clearFaults();
  server.requests.length = 0;
});

// Each test its own text (the cache is shared by tenants) and its own tenant (budgets are not).
const document = () => ({
  text: `Solar panels and wind turbines now produce electricity at record low costs. Energy storage remains a
challenge, but new battery technologies are promising. Reference ${randomUUID()}.`,
});
const tenant = () => `tenant-${randomUUID().slice(0, 8)}`;
const silent = createLogger({ service: 'ai_test', level: 'silent' });
const chatCalls = () => server.requests.filter((r) => r.endpoint === 'chat').length;

function guarded(options: Partial<GuardedAnalyzerOptions> = {}) {
  const metrics = options.metrics ?? new AiMetrics();
  const provider = new OpenAIProvider({ apiKey: 'sk-test', baseURL: server.baseURL, model: 'gpt-test', metrics });
  const chain = new ChainAnalyzer([provider], { metrics, retry: { baseDelayMs: 10 } });
  return { provider, metrics, analyzer: new GuardedAnalyzer(chain, { db, dailyTokenBudget: 1_000_000, metrics, ...options }) };
}

describeAnalyzerContract('guarded openai (test server, PGlite)', () => guarded().analyzer);

describe('GuardedAnalyzer', () => {
  it('serves a repeated analysis from the cache: no tokens spent, cached, the provider named', async () => {
    const { analyzer, metrics } = guarded();
    const input = document();
    const owner = tenant();
    const first = await analyzer.analyze(input, { tenantId: owner });
    const spent = await new TokenLedger(db).usage(owner);
    const second = await analyzer.analyze(input, { tenantId: owner });

    expect(first.cached).toBe(false);
    expect(second).toEqual({ ...first, tokens: { prompt: 0, completion: 0 }, cached: true });
    expect(second.provider).toBe('openai');
    expect(chatCalls()).toBe(1);
    expect(await new TokenLedger(db).usage(owner)).toEqual(spent);
    expect(metrics.snapshot()).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
  });

  it('shares cached answers across tenants and across analyzers on the same database', async () => {
    const input = document();
    await guarded().analyzer.analyze(input, { tenantId: tenant() });
    const again = await guarded().analyzer.analyze(input, { tenantId: tenant() });
    expect(again.cached).toBe(true);
    expect(chatCalls()).toBe(1);
  });

  it("serves the fallback provider's answer from the cache next time", async () => {
    server.inject({ type: 'status', status: 500 }, { times: 2 });
    const metrics = new AiMetrics();
    const providers = ['primary', 'secondary'].map((name) => new OpenAIProvider({ apiKey: 'sk-test', baseURL: server.baseURL, model: 'gpt-test', name, metrics }));
    const analyzer = new GuardedAnalyzer(new ChainAnalyzer(providers, { metrics, retry: { maxAttempts: 2, baseDelayMs: 10 } }), { db, dailyTokenBudget: 1e6, metrics });
    const input = document();
    expect(await analyzer.analyze(input)).toMatchObject({ provider: 'secondary', cached: false });
    expect(await analyzer.analyze(input)).toMatchObject({ provider: 'secondary', cached: true });
    expect(chatCalls()).toBe(3);
  });

  it('keeps the cache out of the way when disabled', async () => {
    const { analyzer } = guarded({ cache: false });
    const input = document();
    await analyzer.analyze(input);
    expect((await analyzer.analyze(input)).cached).toBe(false);
    expect(chatCalls()).toBe(2);
  });

  it('records the actual usage in the ledger and releases the reservation', async () => {
    const { analyzer } = guarded();
    const owner = tenant();
    const result = await analyzer.analyze(document(), { tenantId: owner });
    expect(await new TokenLedger(db).usage(owner)).toEqual({ used: result.tokens.prompt + result.tokens.completion, reserved: 0 });
  });

  it('stops at the budget with an unrecoverable BUDGET_EXCEEDED, before calling the provider', async () => {
    const { metrics, provider } = guarded();
    const input = document();
    const small = guarded({ dailyTokenBudget: provider.estimateTokens(input) - 1, metrics }).analyzer;
    const error = (await small.analyze(input, { tenantId: tenant() }).catch((e: unknown) => e)) as AiError;
    expect(isAiError(error) && error.code).toBe('BUDGET_EXCEEDED');
    expect(error.unrecoverable).toBe(true);
    expect(isUnrecoverable(error)).toBe(true);
    expect(chatCalls()).toBe(0);
    expect(metrics.snapshot().budgetRefusals).toBe(1);
  });

  it('refuses the call that would cross the budget once earlier calls spent it', async () => {
    const { provider } = guarded();
    const owner = tenant();
    const first = document();
    // Room for one call's estimate and a little more: the second call no longer fits.
    const budget = provider.estimateTokens(first) + 50;
    const { analyzer } = guarded({ dailyTokenBudget: budget });
    await analyzer.analyze(first, { tenantId: owner });
    expect((await new TokenLedger(db).usage(owner)).used).toBeGreaterThan(50);
    const second = document();
    await expect(analyzer.analyze(second, { tenantId: owner })).rejects.toMatchObject({ code: 'BUDGET_EXCEEDED' });
    // Another tenant has its own budget.
    await expect(analyzer.analyze(second, { tenantId: tenant() })).resolves.toMatchObject({ provider: 'openai' });
  });

  it('starts a fresh budget on the next UTC day', async () => {
    let now = new Date('2030-01-01T23:59:00Z');
    const { provider } = guarded();
    const input = document();
    const { analyzer } = guarded({ dailyTokenBudget: provider.estimateTokens(input), now: () => now });
    const owner = tenant();
    await analyzer.analyze(input, { tenantId: owner });
    await expect(analyzer.analyze(document(), { tenantId: owner })).rejects.toMatchObject({ code: 'BUDGET_EXCEEDED' });
    now = new Date('2030-01-02T00:00:01Z');
    await expect(analyzer.analyze(document(), { tenantId: owner })).resolves.toMatchObject({ cached: false });
    expect(await new TokenLedger(db, () => now).usage(owner, utcDay(new Date('2030-01-01T12:00:00Z')))).toMatchObject({ reserved: 0 });
  });

  it('falls back to the offline analyzer over budget when configured', async () => {
    const metrics = new AiMetrics();
    const { analyzer } = guarded({ dailyTokenBudget: 10, budgetFallback: new OfflineAnalyzer(), metrics });
    const result = await analyzer.analyze(document(), { tenantId: tenant() });
    expect(result).toMatchObject({ provider: 'offline', tokens: { prompt: 0, completion: 0 }, cached: false });
    expect(chatCalls()).toBe(0);
    expect(metrics.snapshot()).toMatchObject({ budgetRefusals: 1, fallbacks: 1 });
  });

  it('charges the tokens of a failed call and releases its reservation', async () => {
    server.inject({ type: 'invalid-json' }, { times: 2 });
    const { analyzer } = guarded();
    const owner = tenant();
    const error = (await analyzer.analyze(document(), { tenantId: owner }).catch((e: unknown) => e)) as AiError;
    expect(error.code).toBe('INVALID_OUTPUT');
    const usage = await new TokenLedger(db).usage(owner);
    expect(usage).toEqual({ used: error.tokens!.prompt + error.tokens!.completion, reserved: 0 });
    expect(usage.used).toBeGreaterThan(0);
  });

  it("runs inside a caller's transaction on embedded PGlite without waiting for it", async () => {
    const { analyzer } = guarded();
    const owner = tenant();
    const input = document();
    const result = await db.fork().transactional(async () => {
      await analyzer.analyze(input, { tenantId: owner });
      return analyzer.analyze(input, { tenantId: owner });
    });
    expect(result.cached).toBe(true);
    expect((await new TokenLedger(db).usage(owner)).used).toBeGreaterThan(0);
  });
});

describe('createAnalyzerFromEnv', () => {
  it('analyses offline without OPENAI_API_KEY, and says so', async () => {
    const lines: string[] = [];
    const logger = createLogger({ service: 'ai_test', destination: { write: (line: string) => lines.push(JSON.parse(line).msg) } });
    const analyzer = createAnalyzerFromEnv({ OPENAI_API_KEY: '' }, { db, logger });
    expect(analyzer).toBeInstanceOf(OfflineAnalyzer);
    expect(lines).toEqual(['no OPENAI_API_KEY: analysing with the offline analyzer']);
  });

  it('analyses through the configured endpoint behind the cache and the budget', async () => {
    const metrics = new AiMetrics();
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'local-model' };
    const lines: string[] = [];
    const logger = createLogger({ service: 'ai_test', destination: { write: (line: string) => lines.push(JSON.parse(line).msg) } });
    const analyzer = createAnalyzerFromEnv(env, { db, logger, metrics });
    expect(lines).toEqual(['analysing with openai (local-model)']);
    const input = document();
    expect(await analyzer.analyze(input)).toMatchObject({ provider: 'openai', model: 'local-model', cached: false });
    expect(await analyzer.analyze(input)).toMatchObject({ provider: 'openai', cached: true });
    expect(server.requests[0]?.body.model).toBe('local-model');
    expect(metrics.snapshot().cacheHits).toBe(1);
  });

  it('fails over budget, or falls back offline with AI_BUDGET_FALLBACK=offline', async () => {
    const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: server.baseURL, AI_DAILY_TOKEN_BUDGET: '5' };
    await expect(createAnalyzerFromEnv(env, { db, logger: silent }).analyze(document())).rejects.toMatchObject({ code: 'BUDGET_EXCEEDED' });
    const fallback = createAnalyzerFromEnv({ ...env, AI_BUDGET_FALLBACK: 'offline' }, { db, logger: silent });
    expect(await fallback.analyze(document())).toMatchObject({ provider: 'offline' });
    expect(chatCalls()).toBe(0);
  });

  it('reports every invalid AI setting at once', () => {
    const env = { OPENAI_API_KEY: 'x', OPENAI_BASE_URL: 'ftp://nope', AI_DAILY_TOKEN_BUDGET: '-1', AI_TIMEOUT_MS: 'soon', AI_BUDGET_FALLBACK: 'maybe' };
    const error = (() => {
      try {
        createAnalyzerFromEnv(env, { db, logger: silent });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map((i) => i.key).sort()).toEqual(['AI_BUDGET_FALLBACK', 'AI_DAILY_TOKEN_BUDGET', 'AI_TIMEOUT_MS', 'OPENAI_BASE_URL']);
  });

  it("accepts a service's parsed config, other keys and types included", () => {
    const config = { NODE_ENV: 'test', ANALYSIS_RETRY_DELAYS_MS: [1, 2], AI_DAILY_TOKEN_BUDGET: 42, AI_MODEL: 'm' };
    expect(createAnalyzerFromEnv(config, { db, logger: silent })).toBeInstanceOf(OfflineAnalyzer);
  });
});
