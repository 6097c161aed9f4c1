/**
 * How the RabbitMQ log stores events: one stream record per publish (up to {@link PACK_SIZE}
 * events), not one per event. The broker's cost is per record: a stream bound to the exchange,
 * taking each event as a message of its own, cost the pipeline 16% of its throughput on this
 * machine (bench/results/pipeline.json); one record per relay batch costs a few percent.
 *
 * An entry's offset is `record offset × PACK_SIZE + its index in the record`: offsets still grow
 * with publish order and are never reused, and a reader attaches at the record an offset names.
 *
 * A record: u32 count, then per event u32 length + JSON `[messageId, routingKey, headers]` and
 * u32 length + body.
 */
import type { OutgoingMessage } from './transport.ts';

/** Events per record at most, and the factor between a record's offset and its entries'. */
export const PACK_SIZE = 1024;

/** Header marking a record as a pack of events. */
export const LOG_PACK_HEADER = 'x-tributary-log-pack';

export interface PackedEntry {
  readonly messageId: string | undefined;
  readonly routingKey: string;
  readonly headers: Record<string, unknown>;
  readonly body: Buffer;
}

/** The records for these messages, in order, each of at most PACK_SIZE events. */
export function pack(messages: readonly OutgoingMessage[]): Buffer[] {
  const records: Buffer[] = [];
  for (let start = 0; start < messages.length; start += PACK_SIZE) {
    const slice = messages.slice(start, start + PACK_SIZE);
    const parts: Buffer[] = [u32(slice.length)];
    for (const m of slice) {
      const meta = Buffer.from(JSON.stringify([m.messageId ?? null, m.routingKey, m.headers ?? {}]), 'utf8');
      parts.push(u32(meta.length), meta, u32(m.body.length), m.body);
    }
    records.push(Buffer.concat(parts));
  }
  return records;
}

/** The events of a record. @throws on a record that is not one we wrote. */
export function unpack(record: Buffer): PackedEntry[] {
  let at = 0;
  const read = (): Buffer => {
    const length = record.readUInt32BE(at);
    const slice = record.subarray(at + 4, at + 4 + length);
    if (slice.length !== length) throw new RangeError('truncated event log record');
    at += 4 + length;
    return slice;
  };
  const count = record.readUInt32BE(0);
  at = 4;
  const entries: PackedEntry[] = [];
  for (let i = 0; i < count; i++) {
    const [messageId, routingKey, headers] = JSON.parse(read().toString('utf8')) as [string | null, string, Record<string, unknown>];
    entries.push({ messageId: messageId ?? undefined, routingKey, headers, body: read() });
  }
  return entries;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}
