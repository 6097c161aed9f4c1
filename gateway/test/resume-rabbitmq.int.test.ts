/**
 * Resumable subscriptions on RabbitMQ, the log a stream beside the exchange: a gateway starts on
 * a namespace whose stream is still empty (its hub follows it from the beginning, not from an
 * offset the stream does not hold yet), gives cursors, and a client resumes after one, also after
 * the gateway was restarted on the stream as it then stands.
 */
import { servicesAvailable } from '@tributary/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { ITEM_ADDED, startFeed, type Feed } from './fixtures/feed.ts';
import { watch } from './fixtures/watch.ts';

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

describe.skipIf(!(await servicesAvailable()))('a subscription on a gateway over RabbitMQ with its event log', () => {
  let feed: Feed | undefined;
  afterAll(async () => {
    await feed?.stop();
  }, 60_000);

  it('starts on an empty stream, gives cursors, and resumes after one across a gateway restart', async () => {
    feed = await startFeed({ rabbitmq: true });
    const first = watch(await feed.client(), { query: ITEM_ADDED });
    await feed.listening();
    await feed.add(0, 5);
    await first.until(5);
    const cursor = first.messages[1]!.extensions!.cursor!;
    first.stop();
    await feed.restartGateway();
    await feed.add(5, 5);
    const resumed = watch(await feed.client(), { query: ITEM_ADDED, extensions: { after: cursor } });
    await resumed.until(8);
    expect(resumed.ns()).toEqual(range(2, 8));
    await feed.add(10, 2);
    await resumed.until(10);
    expect(resumed.ns()).toEqual(range(2, 10));
  }, 60_000);
});
