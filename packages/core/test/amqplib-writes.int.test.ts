import { servicesAvailable, TEST_AMQP_URL } from '@tributary/core/testing';
import { connect, type ChannelModel } from 'amqplib';
import { afterEach, describe, expect, it } from 'vitest';
import { amqplibInternals, coalesceWrites } from '../src/events/amqplib-writes.ts';

/**
 * The guard for amqplib-writes.ts, the one use of amqplib's internals: these fail when amqplib
 * changes under the patch (its internals move, or it batches its writes itself, when the patch
 * should go).
 */
describe.skipIf(!(await servicesAvailable()))('amqplib write coalescing (internals guard)', () => {
  const open: ChannelModel[] = [];
  afterEach(async () => {
    for (const model of open.splice(0)) await model.close().catch(() => undefined);
  });

  async function connection(): Promise<ChannelModel> {
    const model = await connect(TEST_AMQP_URL, { clientProperties: { connection_name: 'amqplib-writes-guard' } });
    open.push(model);
    return model;
  }

  /** Socket-level writes (each `_write` or `_writev` call) while 200 messages are published in one turn. */
  async function socketWritesFor(model: ChannelModel): Promise<number> {
    const channel = await model.createChannel();
    const socket = amqplibInternals(model)!.stream as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>;
    let writes = 0;
    for (const method of ['_write', '_writev'] as const) {
      const original = socket[method].bind(socket);
      socket[method] = (...args: unknown[]) => {
        writes++;
        original(...args);
      };
    }
    for (let i = 0; i < 200; i++) channel.publish('', 'amqplib-writes-guard.nowhere', Buffer.from(`m${i}`));
    await new Promise((resolve) => setTimeout(resolve, 100));
    await channel.close();
    return writes;
  }

  it('finds the socket and the frame multiplexer where the patch expects them', async () => {
    const internals = amqplibInternals(await connection());
    expect(typeof internals?.muxer?._readIncoming).toBe('function');
    expect(typeof internals?.stream?.cork).toBe('function');
    expect(typeof internals?.stream?.uncork).toBe('function');
  });

  it('writes a turn of publishes to the socket one at a time without the patch', async () => {
    // If this fails, amqplib batches its writes itself: delete amqplib-writes.ts and this test.
    expect(await socketWritesFor(await connection())).toBeGreaterThan(100);
  });

  it('writes a turn of publishes to the socket in a few writes with the patch, once applied per connection', async () => {
    const model = await connection();
    coalesceWrites(model);
    const patched = amqplibInternals(model)!.muxer!._readIncoming;
    coalesceWrites(model);
    expect(amqplibInternals(model)!.muxer!._readIncoming).toBe(patched);
    expect(await socketWritesFor(model)).toBeLessThanOrEqual(5);
  });
});
