/**
 * The provider wrapper that waits on the shared rate windows: a 429's pause held by every worker,
 * and a call that could never fit refused at once. The stores it counts in (memory, PostgreSQL,
 * Redis) meet their contract in packages/core/test/rate-limit*.
 */
import { MemoryRateLimitStore } from '@tributary/core/rate-limit';
import pLimit from 'p-limit';
import { describe, expect, it } from 'vitest';
import { AiMetrics, ChainAnalyzer, OpenAIProvider } from '../src/index.ts';
import { LimitedProvider } from '../src/limits.ts';
import { startOpenAITestServer } from '../src/testing/index.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a provider within its limits', () => {
  it("pauses every caller, in every worker, for a 429's Retry-After", async () => {
    const server = await startOpenAITestServer({ apiKey: 'k' });
    try {
      const store = new MemoryRateLimitStore();
      const make = () =>
        new ChainAnalyzer([new LimitedProvider(new OpenAIProvider({ apiKey: 'k', baseURL: server.baseURL, model: 'm', metrics: new AiMetrics() }), { slots: pLimit(2), rate: { store } })], {
          retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 },
          metrics: new AiMetrics(),
        });
      const [a, b] = [make(), make()];
      server.inject({ type: 'status', status: 429, retryAfter: '2' }, { times: 1, endpoint: 'chat' });
      const started = Date.now();
      const first = a.analyze({ text: 'Revenue grew strongly this quarter.' });
      await sleep(200);
      // A second worker's call comes during the pause the first one's 429 set: it waits too.
      const second = b.analyze({ text: 'Costs fell in every region.' });
      await Promise.all([first, second]);
      const chats = server.requests.filter((r) => r.endpoint === 'chat');
      expect(chats).toHaveLength(3);
      for (const call of chats.slice(1)) expect(call.receivedAt - started).toBeGreaterThanOrEqual(1_950);
    } finally {
      await server.close();
    }
  });

  it('refuses at once a call that could never fit the tokens per window', async () => {
    const server = await startOpenAITestServer({ apiKey: 'k' });
    try {
      const provider = new LimitedProvider(new OpenAIProvider({ apiKey: 'k', baseURL: server.baseURL, model: 'm', metrics: new AiMetrics() }), { rate: { store: new MemoryRateLimitStore(), limits: { tokens: 10 } } });
      await expect(provider.analyze({ text: 'Revenue grew strongly this quarter.' })).rejects.toMatchObject({ code: 'PROVIDER_REJECTED' });
      expect(server.requests).toHaveLength(0);
    } finally {
      await server.close();
    }
  });
});
