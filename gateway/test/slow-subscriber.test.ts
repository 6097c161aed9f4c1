/**
 * Slow subscribers bounded (issue 29): a client that stops reading while 10,000 messages are due
 * is closed with 4008 "Subscriber too slow" once more than SUBSCRIPTION_MAX_QUEUED (1,000) are
 * due to it, counted in tributary_gateway_subscribers_closed_total and logged; the gateway's heap
 * meanwhile grows by less than 40 MB (the 10,000 messages of 8 KB it would otherwise hold are
 * 80 MB). The client, a graphql-ws client keeping its last cursor in the payload it resends on
 * reconnecting (docs/subscriptions.md), then receives every message once, in order.
 * No services: a gateway over a fixture subgraph on the in-memory bus with an array log.
 */
import { registry } from '@tributary/core/metrics';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { ITEM_ADDED, startFeed, type Feed } from './fixtures/feed.ts';
import { watch } from './fixtures/watch.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MB = 1024 * 1024;

const closedTooSlow = async () => {
  const metric = await registry.getSingleMetric('tributary_gateway_subscribers_closed_total')?.get();
  return metric?.values.find((v) => v.labels.reason === 'too_slow')?.value ?? 0;
};

describe('a subscriber that stops reading', () => {
  let feed: Feed;
  afterAll(async () => {
    await feed?.stop();
  });

  it('is closed with 4008 once more than SUBSCRIPTION_MAX_QUEUED messages are due, the gateway’s memory bounded, and resumes from its last cursor with every message', async () => {
    feed = await startFeed({ log: {}, body: 'x'.repeat(8 * 1024) });
    let socket: WebSocket | undefined;
    const closes: number[] = [];
    const client = await feed.client({
      retryAttempts: 3,
      on: {
        connected: (s) => void (socket = s as WebSocket),
        closed: (event) => void closes.push((event as { code: number }).code),
      },
    });
    // The client keeps its last cursor in the payload it subscribed with: graphql-ws sends that
    // payload again when it reconnects, so the stream resumes where it stopped.
    const payload: { query: string; extensions?: { after: string } } = { query: ITEM_ADDED };
    const subscription = watch(client, payload, (message) => {
      if (message.extensions?.cursor) payload.extensions = { after: message.extensions.cursor };
      // The test keeps only what it checks: the gateway's heap is measured in this process.
      if (message.data?.itemAdded) delete (message.data.itemAdded as { body?: string }).body;
    });
    // Beside it, a subscriber that keeps reading: the bound is on what a client leaves unread, not on the traffic.
    // (Without the bodies: the test keeps its messages, and the gateway's heap is measured in this process.)
    const reader = watch(await feed.client(), { query: 'subscription { itemAdded { id n } }' });
    await feed.listening(2);
    await feed.add(0, 1);
    await subscription.until(1);
    await reader.until(1);

    const closedBefore = await closedTooSlow();
    gc();
    const baseline = process.memoryUsage().heapUsed;
    let peak = baseline;
    // It stops reading: what the gateway sends fills the socket's buffers, then waits.
    socket!.pause();
    // In batches the gateway resolves before the next comes: what piles up is what the client leaves unread.
    let published = 1;
    const publish = async () => {
      await feed.add(published, 200);
      published += 200;
      await reader.until(published);
      // Sampled after each batch, with garbage collected: what the gateway holds, not what it has yet to free.
      gc();
      peak = Math.max(peak, process.memoryUsage().heapUsed);
    };
    while (published <= 10_000 && (await closedTooSlow()) === closedBefore) await publish();
    expect(await closedTooSlow()).toBe(closedBefore + 1);
    // Closed while messages were still coming, far short of the 10,000.
    expect(published).toBeLessThan(5_000);

    // Reading again, it finds the close code after what was buffered, reconnects with its last
    // cursor and receives the rest (the replay as fast as it reads), while the rest is published.
    socket!.resume();
    while (published <= 10_000) await publish();
    await subscription.until(10_001);
    expect(closes[0]).toBe(4008);
    expect(subscription.ns()).toEqual(Array.from({ length: 10_001 }, (_, i) => i));
    expect(reader.ns()).toEqual(Array.from({ length: 10_001 }, (_, i) => i));
    expect(await closedTooSlow()).toBe(closedBefore + 1);
    expect((peak - baseline) / MB).toBeLessThan(40);
  }, 300_000);
});
