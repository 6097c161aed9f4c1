import type { Database } from '@tributary/core/db';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable } from '@tributary/core/testing';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aiEntities, AiMetrics, aiMigrations, ChainAnalyzer, GuardedAnalyzer, isAiError, OpenAIProvider, TokenLedger } from '../src/index.ts';
import { startOpenAITestServer, type OpenAITestServer } from '../src/testing/index.ts';

describe.skipIf(!(await servicesAvailable()))('token budget on PostgreSQL', () => {
  const target = randomDatabaseTarget('tributary_ai');
  // Two handles on one database act like two worker processes, each with its own pool.
  let workerA: Database;
  let workerB: Database;
  let server: OpenAITestServer;

  beforeAll(async () => {
    workerA = await openTestDatabase(target, { entities: aiEntities, migrations: aiMigrations, poolSize: 12 });
    workerB = await openTestDatabase(target, { entities: aiEntities, migrations: aiMigrations, poolSize: 12 });
    server = await startOpenAITestServer();
  });
  afterAll(async () => {
    await server?.close();
    await workerA?.close();
    await workerB?.close();
    await dropTestDatabase(target);
  });

  const tenant = () => `tenant-${randomUUID().slice(0, 8)}`;

  it('lets exactly as many racing reservations through as the budget covers', async () => {
    const owner = tenant();
    const ledgers = [new TokenLedger(workerA), new TokenLedger(workerB)];
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => ledgers[i % 2]!.reserve(owner, 100, 1_050)));
    expect(results.filter(Boolean)).toHaveLength(10);
    expect(await ledgers[0]!.usage(owner)).toEqual({ used: 0, reserved: 1_000 });
  });

  it('never reserves an estimate larger than the whole budget', async () => {
    const owner = tenant();
    expect(await new TokenLedger(workerA).reserve(owner, 2_000, 1_000)).toBeNull();
    expect(await new TokenLedger(workerA).usage(owner)).toEqual({ used: 0, reserved: 0 });
  });

  it("reserves outside the caller's transaction, so other workers see it at once", async () => {
    const owner = tenant();
    await workerA.fork().transactional(async () => {
      expect(await new TokenLedger(workerA).reserve(owner, 600, 1_000)).not.toBeNull();
      // Still inside A's transaction: B must already count A's reservation.
      expect(await new TokenLedger(workerB).reserve(owner, 600, 1_000)).toBeNull();
    });
  });

  it("two workers racing on a nearly spent budget overspend by at most one call's estimate", async () => {
    const owner = tenant();
    const texts = Array.from(
      { length: 16 },
      (_, i) => `Report ${i} (${randomUUID()}): wind and solar output rose again while battery storage costs fell, grid operators said.`,
    );
    const metrics = new AiMetrics();
    const estimate = Math.max(...texts.map((text) => new OpenAIProvider({ apiKey: 'x', model: 'gpt-test' }).estimateTokens({ text })));
    // Nearly spent: what is left covers one call's estimate and a half, no more.
    const limit = 100_000;
    const spent = limit - Math.floor(estimate * 1.5);
    const ledger = new TokenLedger(workerA);
    await ledger.settle((await ledger.reserve(owner, spent, limit))!, spent);

    const worker = (db: Database) => {
      const provider = new OpenAIProvider({ apiKey: 'sk-test', baseURL: server.baseURL, model: 'gpt-test', metrics });
      return new GuardedAnalyzer(new ChainAnalyzer([provider], { metrics }), { db, dailyTokenBudget: limit, metrics });
    };
    const analyzers = [worker(workerA), worker(workerB)];
    const outcomes = await Promise.allSettled(texts.map((text, i) => analyzers[i % 2]!.analyze({ text }, { tenantId: owner })));

    const passed = outcomes.filter((o) => o.status === 'fulfilled');
    const refused = outcomes.filter((o) => o.status === 'rejected' && isAiError(o.reason) && o.reason.code === 'BUDGET_EXCEEDED');
    expect(passed.length).toBeGreaterThanOrEqual(1);
    expect(passed.length + refused.length).toBe(texts.length);
    const { used, reserved } = await ledger.usage(owner);
    expect(reserved).toBe(0);
    expect(used - limit).toBeLessThanOrEqual(estimate);
    // Our estimate is an upper bound of what a call spends, so in fact nothing is overspent.
    expect(used).toBeLessThanOrEqual(limit);
    expect(metrics.snapshot().budgetRefusals).toBe(refused.length);
  });
});
