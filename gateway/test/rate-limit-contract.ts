/**
 * What every RateLimiter store must do, one suite for all of them: the same token bucket
 * (UPLOAD_RATE_LIMIT_PER_MINUTE tokens, refilled continuously) whether it counts in memory or
 * in Redis. Timing assertions keep margins of tens of ms and use 600/min (a token per 100 ms).
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { RateLimiter } from '../src/rate-limit.ts';

/** Two handles on one store (as two gateway processes would have), and how to let go of it. */
export interface LimiterUnderTest {
  limiters: readonly [RateLimiter, RateLimiter];
  close(): Promise<void>;
}

/** Runs the contract against the store `makeLimiter` opens, once per test, with the limit it is given. */
export function rateLimiterContract(name: string, makeLimiter: (perMinute: number) => Promise<LimiterUnderTest>): void {
  const key = () => `tenant-a:${randomUUID().slice(0, 8)}`;
  async function withLimiter(perMinute: number, test: (limiters: LimiterUnderTest['limiters']) => Promise<void>): Promise<void> {
    const { limiters, close } = await makeLimiter(perMinute);
    try {
      await test(limiters);
    } finally {
      await close();
    }
  }

  describe(`the ${name} rate limiter (the token bucket contract)`, () => {
    it('allows a burst of exactly the limit across both handles, then says the time until one token is back', () =>
      withLimiter(5, async ([a, b]) => {
        const k = key();
        const results: number[] = [];
        for (let i = 0; i < 5; i++) results.push(await (i % 2 ? b : a).take(k));
        expect(results).toEqual([0, 0, 0, 0, 0]);
        // 5 per minute: one token every 12 s (a fixed window would say up to 60 s).
        const wait = await b.take(k);
        expect(wait).toBeGreaterThan(11_000);
        expect(wait).toBeLessThanOrEqual(12_000);
      }));

    it('keeps the keys apart', () =>
      withLimiter(5, async ([a, b]) => {
        const [alice, bob] = [key(), key()];
        expect(await a.take(alice, 5)).toBe(0);
        expect(await b.take(alice)).toBeGreaterThan(0);
        for (let i = 0; i < 5; i++) expect(await (i % 2 ? b : a).take(bob)).toBe(0);
        expect(await a.take(bob)).toBeGreaterThan(0);
      }));

    it('admits exactly the limit when many takes race from both handles', () =>
      withLimiter(5, async (limiters) => {
        const k = key();
        const results = await Promise.all(Array.from({ length: 40 }, (_, i) => limiters[i % 2]!.take(k)));
        expect(results.filter((wait) => wait === 0)).toHaveLength(5);
      }));

    it('takes n tokens in one operation, and nothing of a take it refuses', () =>
      withLimiter(5, async ([a, b]) => {
        const k = key();
        const refused = await a.take(k, 6);
        // One token short: 12 s at 5 per minute.
        expect(refused).toBeGreaterThan(11_000);
        expect(refused).toBeLessThanOrEqual(12_000);
        expect(await b.take(k, 3)).toBe(0);
        expect(await a.take(k, 3)).toBeGreaterThan(0);
        expect(await b.take(k, 2)).toBe(0);
        expect(await a.take(k)).toBeGreaterThan(0);
      }));

    it('allows exactly one more once the retry-after of one token has passed', () =>
      withLimiter(600, async ([a, b]) => {
        const k = key();
        expect(await a.take(k, 600)).toBe(0);
        const wait = await b.take(k);
        expect(wait).toBeGreaterThan(0);
        expect(wait).toBeLessThanOrEqual(100);
        await sleep(wait + 10);
        expect(await a.take(k)).toBe(0);
        expect(await b.take(k)).toBeGreaterThan(0);
      }));

    it('holds no more than the limit, however long a key rests', () =>
      withLimiter(600, async ([a, b]) => {
        const k = key();
        expect(await a.take(k)).toBe(0);
        // Three tokens' refill onto a bucket one short of full.
        await sleep(300);
        expect(await b.take(k, 601)).toBeGreaterThan(0);
        expect(await a.take(k, 600)).toBe(0);
      }));

    it('in any span allows at most the limit plus what refilled in it, and in a steady stream that much', () =>
      withLimiter(600, async (limiters) => {
        const k = key();
        const perMs = 600 / 60_000;
        // Each allowed take, from when it was asked to when it answered: the store decided in between.
        const allowed: { asked: number; answered: number }[] = [];
        const started = performance.now();
        for (let i = 0; performance.now() - started < 1_200; i++) {
          const asked = performance.now();
          const wait = await limiters[i % 2]!.take(k);
          if (wait === 0) allowed.push({ asked, answered: performance.now() });
          else await sleep(Math.min(wait, 5));
        }
        const span = performance.now() - started;
        // A fixed window lets a user take the limit at the end of one window and again at the start of the next.
        let worst = { excess: -Infinity, count: 0, ms: 0 };
        for (let i = 0; i < allowed.length; i++) {
          for (let j = i; j < allowed.length; j++) {
            const ms = allowed[j]!.answered - allowed[i]!.asked;
            const excess = j - i + 1 - (600 + ms * perMs);
            if (excess > worst.excess) worst = { excess, count: j - i + 1, ms: Math.round(ms) };
          }
        }
        expect(worst.excess, `${worst.count} allowed within ${worst.ms} ms`).toBeLessThanOrEqual(1);
        // Polled every 5 ms or so: at most the last token or two can be left unclaimed.
        expect(allowed.length).toBeGreaterThanOrEqual(600 + Math.floor((span - 50) * perMs) - 1);
      }));
  });
}
