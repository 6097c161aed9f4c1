/**
 * Resumable subscriptions (issue 29): on a bus that keeps an event log, every message of an
 * `@eventSubscription` carries `extensions.cursor`, and a client subscribing again with
 * `extensions.after` receives what it missed after that cursor, in order and through federation,
 * then the live messages: no gap, no double, across a gateway restart too. A cursor the log no
 * longer covers is CURSOR_EXPIRED. Without a log there is no cursor and `after` is refused.
 * No services: a gateway over a fixture subgraph on the in-memory bus with an array log.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ITEM_ADDED, ITEM_WATCHED, startFeed, type Feed } from './fixtures/feed.ts';
import { watch } from './fixtures/watch.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

let feed: Feed | undefined;
afterEach(async () => {
  await feed?.stop();
  feed = undefined;
});

describe('a subscription on a gateway whose bus keeps an event log', () => {
  it('gives every message a cursor; resubscribing after the last one receives exactly what was missed, in order, then live ones, across a gateway restart', async () => {
    feed = await startFeed({ log: {} });
    const first = watch(await feed.client(), { query: ITEM_ADDED });
    await feed.listening();
    await feed.add(0, 10);
    await first.until(10);
    const cursors = first.messages.map((m) => m.extensions?.cursor);
    expect(cursors.every((c) => typeof c === 'string')).toBe(true);
    expect(new Set(cursors).size).toBe(10);
    const cursor = first.lastCursor()!;
    first.stop();

    // Missed: 10 before the restart, 10 after it, and another tenant's, which the client never hears.
    await feed.add(10, 10);
    await feed.add(0, 5, 'tenant-b');
    await feed.restartGateway();
    await feed.add(20, 10);

    const resumed = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after: cursor } });
    await resumed.until(20);
    expect(resumed.ns()).toEqual(range(10, 20));
    await feed.add(30, 5);
    await resumed.until(25);
    expect(resumed.ns()).toEqual(range(10, 25));
    // Each message's cursor resumes after it: from the 15th, the rest again.
    const again = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after: resumed.messages[14]!.extensions!.cursor } });
    await again.until(10);
    expect(again.ns()).toEqual(range(25, 10));
  });

  it('hands over from the history to the live events with no gap and no double while events keep coming', async () => {
    feed = await startFeed({ log: {}, env: { SUBSCRIPTION_MAX_QUEUED: '50' } });
    const first = watch(await feed.client(), { query: ITEM_ADDED });
    await feed.listening();
    // In batches under the bound: a burst larger than SUBSCRIPTION_MAX_QUEUED closes its subscribers.
    for (let n = 0; n < 100; n += 25) {
      await feed.add(n, 25);
      await first.until(n + 25);
    }
    const cursor = first.messages[4]!.extensions!.cursor;
    first.stop();
    // Resume while 300 more are published in small batches: the replay (95 behind, more than
    // SUBSCRIPTION_MAX_QUEUED) and the live events overlap.
    const resumed = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after: cursor } });
    for (let n = 100; n < 400; n += 10) {
      await feed.add(n, 10);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await resumed.until(395);
    expect(resumed.ns()).toEqual(range(5, 395));
  });

  it('gives a first message read from state the position where the stream started; resuming from it replays the events after it, with no state read first', async () => {
    feed = await startFeed({ log: {} });
    await feed.add(5, 1);
    await feed.add(0, 3);
    const first = watch(await feed.client(), { query: ITEM_WATCHED, variables: { id: 'item-5' } });
    await first.until(1);
    await feed.add(5, 1);
    await feed.add(6, 1);
    await feed.add(5, 1);
    await first.until(3);
    const cursors = first.messages.map((m) => m.extensions?.cursor);
    expect(cursors.every((c) => typeof c === 'string')).toBe(true);
    first.stop();
    const resumed = watch(await feed.client(), { query: ITEM_WATCHED, variables: { id: 'item-5' }, extensions: { after: cursors[0] } });
    await resumed.until(2);
    // The same two events, each with the cursor it had: the state is not read again.
    expect(resumed.messages.map((m) => m.extensions?.cursor)).toEqual(cursors.slice(1));
    expect(resumed.messages.map((m) => (m.data as { itemWatched?: { id: string } } | undefined)?.itemWatched?.id)).toEqual(['item-5', 'item-5']);
  });

  it('catches a client that keeps reading up from the log after a burst larger than SUBSCRIPTION_MAX_QUEUED, rather than close it', async () => {
    feed = await startFeed({ log: {}, env: { SUBSCRIPTION_MAX_QUEUED: '50' } });
    const closes: number[] = [];
    const live = watch(await feed.client({ on: { closed: (event) => void closes.push((event as { code: number }).code) } }), { query: ITEM_ADDED });
    await feed.listening();
    await feed.add(0, 300);
    await feed.add(300, 300);
    await live.until(600);
    expect(live.ns()).toEqual(range(0, 600));
    expect(closes).toEqual([]);
  });

  it('refuses a cursor the log no longer keeps with CURSOR_EXPIRED, and one it never issued with CURSOR_INVALID, then completes', async () => {
    feed = await startFeed({ log: { maxEntries: 5 } });
    const first = watch(await feed.client(), { query: ITEM_ADDED });
    await feed.listening();
    await feed.add(0, 1);
    await first.until(1);
    const cursor = first.lastCursor()!;
    first.stop();
    await feed.add(1, 20);

    for (const [after, code] of [
      [cursor, 'CURSOR_EXPIRED'],
      ['not-a-cursor', 'CURSOR_INVALID'],
      [42, 'CURSOR_INVALID'],
    ] as const) {
      const refused = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after } });
      await refused.done;
      expect(refused.messages.map((m) => m.errors?.[0]?.extensions?.code)).toEqual([code]);
    }
  });
});

describe('a subscription on a gateway whose bus keeps no event log', () => {
  it('sends messages without a cursor and refuses extensions.after with CURSOR_UNSUPPORTED', async () => {
    feed = await startFeed();
    const live = watch(await feed.client(), { query: ITEM_ADDED });
    await feed.listening();
    await feed.add(0, 3);
    await live.until(3);
    expect(live.ns()).toEqual([0, 1, 2]);
    expect(live.messages.map((m) => m.extensions?.cursor)).toEqual([undefined, undefined, undefined]);
    const refused = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after: 'anything' } });
    await refused.done;
    expect(refused.messages.map((m) => m.errors?.[0]?.extensions?.code)).toEqual(['CURSOR_UNSUPPORTED']);
  });
});
