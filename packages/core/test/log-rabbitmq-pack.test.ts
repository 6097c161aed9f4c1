import { describe, expect, it } from 'vitest';
import { PACK_SIZE, pack, unpack } from '../src/events/log-rabbitmq-pack.ts';

describe("the RabbitMQ log's records", () => {
  it('keep each event as published, in order, at most PACK_SIZE to a record', () => {
    const messages = Array.from({ length: 2 * PACK_SIZE + 5 }, (_, i) => ({
      routingKey: `doc.t${i % 3}`,
      messageId: i % 7 === 0 ? (undefined as unknown as string) : `id-${i}`,
      headers: { 'x-tributary-time': 1_700_000_000_000 + i, note: `é${i}` },
      body: Buffer.from(i % 11 === 0 ? '' : JSON.stringify({ i })),
    }));
    const records = pack(messages);
    expect(records.map((r) => unpack(r).length)).toEqual([PACK_SIZE, PACK_SIZE, 5]);
    const back = records.flatMap(unpack);
    expect(back.map((e) => [e.messageId, e.routingKey, e.headers, e.body.toString()])).toEqual(
      messages.map((m) => [m.messageId, m.routingKey, m.headers, m.body.toString()]),
    );
  });

  it('refuse a truncated record', () => {
    const [record] = pack([{ routingKey: 'a', messageId: 'x', body: Buffer.from('hello') }]);
    expect(() => unpack(record!.subarray(0, record!.length - 2))).toThrow(RangeError);
  });
});
