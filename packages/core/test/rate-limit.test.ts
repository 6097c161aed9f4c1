/**
 * The rate limiter without services: the window arithmetic, the memory store (the contract, and
 * its sliding window on a clock of our own). PostgreSQL and Redis meet the same contract in
 * rate-limit.int.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { MemoryRateLimitStore, rateLimitTablesMigration, windowLimiter, windowWait } from '../src/rate-limit/index.ts';
import { describeRateLimitContract } from './rate-limit-contract.ts';

describeRateLimitContract('memory', true, async () => {
  const store = new MemoryRateLimitStore();
  return { stores: [store, store], close: () => store.close() };
});

describe('windowWait', () => {
  const limits = { requests: 2, cost: 0, windowMs: 1_000 };
  it('is 0 with room, else the time until the call that makes room leaves the window', () => {
    expect(windowWait([{ at: 0, cost: 0 }], 500, 0, limits)).toBe(0);
    expect(windowWait([{ at: 0, cost: 0 }, { at: 100, cost: 0 }], 500, 0, limits)).toBe(500);
    expect(windowWait([{ at: 0, cost: 50 }, { at: 100, cost: 50 }], 500, 60, { requests: 0, cost: 100, windowMs: 1_000 })).toBe(600);
    expect(windowWait([{ at: 0, cost: 50 }, { at: 100, cost: 50 }], 500, 50, { requests: 0, cost: 100, windowMs: 1_000 })).toBe(500);
  });
});

describe('the memory store on a clock of its own', () => {
  function clocked(perMinute: number) {
    const clock = { now: 1_000_000 };
    const limiter = windowLimiter(new MemoryRateLimitStore({ now: () => clock.now }), { requests: 0, cost: perMinute, windowMs: 60_000 });
    return { clock, limiter };
  }

  it('admits the limit in any 60 s, refuses the next until the oldest leave, and admits as much as left', async () => {
    const { clock, limiter } = clocked(60);
    expect(await limiter.take('u', 30)).toBe(0);
    clock.now += 30_000;
    expect(await limiter.take('u', 30)).toBe(0);
    // The first 30 leave the window 60 s after they came: 30 s from now.
    expect(await limiter.take('u')).toBe(30_000);
    clock.now += 29_999;
    expect(await limiter.take('u')).toBe(1);
    clock.now += 1;
    expect(await limiter.take('u', 31)).toBe(30_000);
    expect(await limiter.take('u', 30)).toBe(0);
    expect(await limiter.take('u')).toBe(30_000);
  });

  it('never admits the burst and its refill in one window, as a token bucket would', async () => {
    const { clock, limiter } = clocked(60);
    for (let i = 0; i < 60; i++) expect(await limiter.take('u')).toBe(0);
    clock.now += 59_999;
    expect(await limiter.take('u')).toBe(1);
    expect(await limiter.take('v', 60)).toBe(0);
  });

  it('admits nothing sooner when the clock steps back', async () => {
    const { clock, limiter } = clocked(60);
    expect(await limiter.take('u', 60)).toBe(0);
    clock.now -= 5_000;
    expect(await limiter.take('u')).toBe(65_000);
    clock.now += 65_000;
    expect(await limiter.take('u')).toBe(0);
  });

  it('holds a key for a pause, and then for no longer', async () => {
    const clock = { now: 1_000_000 };
    const store = new MemoryRateLimitStore({ now: () => clock.now });
    await store.pause('p', 2_000);
    await store.pause('p', 1_000);
    expect(await store.tryAcquire('p', 0, { requests: 0, cost: 0, windowMs: 60_000 })).toEqual({ ok: false, waitMs: 2_000 });
    clock.now += 2_000;
    expect(await store.tryAcquire('p', 0, { requests: 0, cost: 0, windowMs: 60_000 })).toEqual({ ok: true });
  });
});

describe('the SQL store', () => {
  it('takes only plain table names, which go into its statements', () => {
    expect(() => rateLimitTablesMigration({ calls: 'calls; drop table x', pauses: 'pauses', lock: 'l' })).toThrow(/not a plain SQL table name/);
  });
});
