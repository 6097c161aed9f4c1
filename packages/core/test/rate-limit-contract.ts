/**
 * What every RateLimitStore must do, one suite for all of them: the same sliding window (at most
 * N admissions, or N units of cost, in any window) whether it counts in memory, in PostgreSQL or
 * in Redis, with two handles on one store as two processes would have. Timing assertions use
 * windows of 1 s and keep margins of tens of ms; the stores decide on their own clocks.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { windowLimiter, type RateLimitStore, type WindowLimits } from '../src/rate-limit/index.ts';

/** Two handles on one store (as two processes would have), and how to let go of it (and of what it stored). */
export interface RateLimitFixture {
  stores: readonly [RateLimitStore, RateLimitStore];
  close(): Promise<void>;
}

const WINDOW = 1_000;
const MINUTE = 60_000;
const key = () => `tenant-a:${randomUUID().slice(0, 8)}`;
const requests = (n: number, windowMs = WINDOW): WindowLimits => ({ requests: n, cost: 0, windowMs });
const cost = (n: number, windowMs = WINDOW): WindowLimits => ({ requests: 0, cost: n, windowMs });
const NONE: WindowLimits = { requests: 0, cost: 0, windowMs: WINDOW };

/** Runs the contract against the store `open` makes, a fresh one (database, key prefix) per test. */
export function describeRateLimitContract(name: string, available: boolean, open: () => Promise<RateLimitFixture>): void {
  describe.skipIf(!available)(`rate-limit store contract: ${name}`, () => {
    let fixture: RateLimitFixture | undefined;
    let stores: RateLimitFixture['stores'];
    beforeEach(async () => {
      fixture = await open();
      stores = fixture.stores;
    });
    afterEach(async () => {
      await fixture?.close();
      fixture = undefined;
    });

    it('admits exactly the limit across both handles, then says when the oldest leaves the window', () => admitsTheLimit(stores));
    it('keeps the keys apart', () => keepsKeysApart(stores));
    it('admits exactly the limit when many calls race from both handles', () => admitsExactlyUnderRace(stores));
    it('takes a cost of n in one admission, nothing of one it refuses, and refuses for ever a cost above the limit', () => takesCosts(stores));
    it('counts costs: a call waits until enough of the window has left', () => waitsForCostToLeave(stores));
    it('admits again as the oldest leave the window, as much as left it', () => refillsAsTheOldestLeave(stores));
    // Two runs of 2.5 windows each.
    it('never admits more than the limit in any window, however many workers race, nor starves them', () => holdsInEveryWindow(stores), 15_000);
    it('counts a finished call from its end: a remote service saw it no earlier than it was sent', () => countsFromTheEnd(stores));
    it('holds every call of a key, in every handle, for a pause, limits or not', () => holdsForAPause(stores));
  });
}

type Stores = RateLimitFixture['stores'];

async function admitsTheLimit([a, b]: Stores): Promise<void> {
  const k = key();
  const started = performance.now();
  for (let i = 0; i < 5; i++) expect(await (i % 2 ? b : a).tryAcquire(k, 1, cost(5, MINUTE))).toMatchObject({ ok: true });
  const refused = await b.tryAcquire(k, 1, cost(5, MINUTE));
  // A window after the first admission (a token bucket would say 12 s: one token's refill).
  expect(refused.ok).toBe(false);
  if (!refused.ok) {
    expect(refused.waitMs).toBeGreaterThan(MINUTE - (performance.now() - started) - 50);
    expect(refused.waitMs).toBeLessThanOrEqual(MINUTE);
  }
  // The requests limit counts admissions the same way.
  const r = key();
  for (let i = 0; i < 3; i++) expect((await (i % 2 ? b : a).tryAcquire(r, 0, requests(3, MINUTE))).ok).toBe(true);
  expect((await a.tryAcquire(r, 0, requests(3, MINUTE))).ok).toBe(false);
}

async function keepsKeysApart([a, b]: Stores): Promise<void> {
  const [alice, bob] = [key(), key()];
  expect((await a.tryAcquire(alice, 5, cost(5))).ok).toBe(true);
  expect((await b.tryAcquire(alice, 1, cost(5))).ok).toBe(false);
  for (let i = 0; i < 5; i++) expect((await (i % 2 ? b : a).tryAcquire(bob, 1, cost(5))).ok).toBe(true);
  expect((await a.tryAcquire(bob, 1, cost(5))).ok).toBe(false);
}

async function admitsExactlyUnderRace(stores: Stores): Promise<void> {
  const k = key();
  const admissions = await Promise.all(Array.from({ length: 40 }, (_, i) => stores[i % 2]!.tryAcquire(k, 1, cost(5, MINUTE))));
  expect(admissions.filter((a) => a.ok)).toHaveLength(5);
}

async function takesCosts([a, b]: Stores): Promise<void> {
  const k = key();
  expect(await a.tryAcquire(k, 6, cost(5))).toEqual({ ok: false, waitMs: Infinity });
  // The limiter a caller with one limit holds says the same.
  expect(await windowLimiter(a, cost(5)).take(k, 6)).toBe(Infinity);
  expect((await b.tryAcquire(k, 3, cost(5))).ok).toBe(true);
  expect((await a.tryAcquire(k, 3, cost(5))).ok).toBe(false);
  expect((await b.tryAcquire(k, 2, cost(5))).ok).toBe(true);
  expect((await a.tryAcquire(k, 1, cost(5))).ok).toBe(false);
}

async function waitsForCostToLeave(stores: Stores): Promise<void> {
  const k = key();
  expect(await stores[0].tryAcquire(k, 40, cost(100))).toMatchObject({ ok: true });
  expect(await stores[1].tryAcquire(k, 40, cost(100))).toMatchObject({ ok: true });
  const refused = await stores[0].tryAcquire(k, 40, cost(100));
  expect(refused.ok).toBe(false);
  if (!refused.ok) {
    expect(refused.waitMs).toBeGreaterThan(WINDOW / 2);
    expect(refused.waitMs).toBeLessThanOrEqual(WINDOW + 50);
    await sleep(refused.waitMs + 10);
  }
  expect(await stores[1].tryAcquire(k, 40, cost(100))).toMatchObject({ ok: true });
}

/** A call with the local times just before and just after it: the store decided in between. */
async function bracketed<T>(call: () => Promise<T>): Promise<{ value: T; before: number; after: number }> {
  const before = performance.now();
  const value = await call();
  return { value, before, after: performance.now() };
}

/** Clock slack between the store's clock and this process's monotonic one (ms granularity, rounding up). */
const SLACK = 3;

async function refillsAsTheOldestLeave([a, b]: Stores): Promise<void> {
  const k = key();
  const first = await bracketed(() => a.tryAcquire(k, 1, cost(3)));
  expect(first.value.ok).toBe(true);
  await sleep(500);
  const second = await bracketed(() => b.tryAcquire(k, 2, cost(3)));
  expect(second.value.ok).toBe(true);
  const refusal = await bracketed(() => a.tryAcquire(k, 1, cost(3)));
  const refused = refusal.value;
  expect(refused.ok).toBe(false);
  if (refused.ok) return;
  // Until the first admission leaves: a window after it, however long the calls took (bounds from the brackets).
  expect(refused.waitMs).toBeGreaterThanOrEqual(WINDOW - (refusal.after - first.before) - SLACK);
  expect(refused.waitMs).toBeLessThanOrEqual(WINDOW - (refusal.before - first.after) + SLACK);
  await sleep(refused.waitMs + 10);
  // The one unit that left, and no more: the other two leave some 500 ms later.
  expect((await b.tryAcquire(k, 2, cost(3))).ok).toBe(false);
  expect((await b.tryAcquire(k, 1, cost(3))).ok).toBe(true);
  const next = await bracketed(() => a.tryAcquire(k, 1, cost(3)));
  expect(next.value.ok).toBe(false);
  // Until the second admission leaves.
  if (!next.value.ok) expect(next.value.waitMs).toBeLessThanOrEqual(WINDOW - (next.before - second.after) + SLACK);
}

interface Admitted {
  sent: number;
  answered: number;
}

/**
 * Admit as fast as allowed from `workers` racing loops for `ms`. Each admission as the interval
 * our clock can place it in: the store decides on its own clock some time between the request
 * leaving and the answer arriving.
 */
async function race(store: RateLimitStore, k: string, limits: WindowLimits, workers: number, ms: number): Promise<Admitted[]> {
  const admitted: Admitted[] = [];
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < until) {
        const sent = performance.now();
        const admission = await store.tryAcquire(k, 1, limits);
        if (admission.ok) admitted.push({ sent, answered: performance.now() });
        else await sleep(Math.min(admission.waitMs, until - Date.now() + 1));
      }
    }),
  );
  return admitted.sort((x, y) => x.sent - y.sent);
}

/**
 * The most admissions certainly inside one window: those sent at or after some admission's
 * request left and answered less than `windowMs` after it. No slack for the time an answer
 * spends on the way back (a loaded machine holds one back for tens of ms) is needed, nor given.
 */
function surelyInOneWindow(admitted: readonly Admitted[], windowMs: number): number {
  let most = 0;
  for (const start of admitted) most = Math.max(most, admitted.filter((x) => x.sent >= start.sent && x.answered < start.sent + windowMs).length);
  return most;
}

async function holdsInEveryWindow(stores: Stores): Promise<void> {
  const k = key();
  for (const limits of [requests(5), cost(5)]) {
    const k2 = `${k}:${limits.requests ? 'requests' : 'cost'}`;
    // Two handles (two processes' pools or clients), three workers each.
    const [a, b] = await Promise.all([race(stores[0], k2, limits, 3, 2_500), race(stores[1], k2, limits, 3, 2_500)]);
    const all = [...a, ...b];
    expect(surelyInOneWindow(all, WINDOW)).toBeLessThanOrEqual(5);
    // …and it is not starved: about 5 per window over 2.5 windows.
    expect(all.length).toBeGreaterThanOrEqual(10);
    expect(all.length).toBeLessThanOrEqual(15);
  }
}

async function countsFromTheEnd(stores: Stores): Promise<void> {
  const k = key();
  const first = await stores[0].tryAcquire(k, 0, requests(1));
  expect(first.ok && first.call).toBeTruthy();
  await sleep(400);
  const finished = await bracketed(() => stores[0].finish(k, (first as { call: string }).call));
  const refusal = await bracketed(() => stores[1].tryAcquire(k, 0, requests(1)));
  const refused = refusal.value;
  expect(refused.ok).toBe(false);
  // A full window from the end (400 ms after the admission), not from the admission.
  if (!refused.ok) expect(refused.waitMs).toBeGreaterThanOrEqual(WINDOW - (refusal.after - finished.before) - SLACK);
}

async function holdsForAPause(stores: Stores): Promise<void> {
  const k = key();
  const paused = await bracketed(() => stores[0].pause(k, 400));
  for (const limits of [NONE, requests(5), cost(5)]) {
    const { value: held, after } = await bracketed(() => stores[1].tryAcquire(k, 1, limits));
    expect(held.ok).toBe(false);
    // The rest of the pause, however long the calls took.
    if (!held.ok) expect(held.waitMs).toBeGreaterThanOrEqual(400 - (after - paused.before) - SLACK);
  }
  expect(await stores[1].tryAcquire(key(), 0, NONE)).toEqual({ ok: true });
  await sleep(450);
  expect(await stores[0].tryAcquire(k, 0, NONE)).toEqual({ ok: true });
}
