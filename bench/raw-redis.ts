import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { onInterruptDelete, type RawBatching } from './pipeline-settings.ts';

/** How long the reader may find nothing before the run counts as lost. */
const STALL_MS = 30_000;
const BLOCK_MS = 1_000;

/**
 * Raw ioredis on one stream, no database: XADD of 512-byte messages, pipelined `batch` at a time
 * with `concurrency` pipelines in flight, and a consumer group read with XREADGROUP (`prefetch`
 * per read) on a connection of its own, each read's entries acknowledged with one XACK sent
 * ahead of the next read. Messages/s from the first publish to the last read; the stream (and its
 * group) is deleted after.
 */
export async function rawRedis(url: string, ns: string, messages: number, { batch, concurrency, prefetch }: RawBatching): Promise<number> {
  const key = `${ns}:raw`; // `:` as the transport separates its keys
  const group = 'raw';
  // A blocking read holds its connection: the reader gets one of its own, as a real consumer would.
  const publisher = new Redis(url, { lazyConnect: true });
  const reader = new Redis(url, { lazyConnect: true });
  const forget = onInterruptDelete(async () => {
    await publisher.del(key);
  });
  try {
    await publisher.connect();
    await reader.connect();
    await publisher.xgroup('CREATE', key, group, '$', 'MKSTREAM');
    const body = randomBytes(256).toString('hex'); // 512 bytes, as raw amqplib's
    const read = async () => {
      let received = 0;
      let idleSince = performance.now();
      const acks: Promise<unknown>[] = [];
      while (received < messages) {
        const reply = (await reader.xreadgroup('GROUP', group, 'c1', 'COUNT', prefetch, 'BLOCK', BLOCK_MS, 'STREAMS', key, '>')) as [string, [string, string[]][]][] | null;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length === 0) {
          if (performance.now() - idleSince > STALL_MS) throw new Error(`raw redis: ${received} of ${messages} messages read, then nothing for ${STALL_MS} ms`);
          continue;
        }
        idleSince = performance.now();
        // Not awaited: on the same connection the XACK goes out before the next read, in one round trip with it.
        acks.push(reader.xack(key, group, ...entries.map(([id]) => id)));
        received += entries.length;
      }
      await Promise.all(acks);
    };
    const started = performance.now();
    const reading = read();
    let sent = 0;
    const sender = async () => {
      while (sent < messages) {
        const n = Math.min(batch, messages - sent);
        sent += n;
        const pipeline = publisher.pipeline();
        for (let i = 0; i < n; i++) pipeline.xadd(key, '*', 'body', body);
        const results = (await pipeline.exec()) ?? [];
        const failed = results.find(([error]) => error);
        if (failed) throw failed[0]!;
      }
    };
    await Promise.all([...Array.from({ length: concurrency }, sender), reading]);
    return messages / ((performance.now() - started) / 1000);
  } finally {
    await publisher.del(key).catch(() => {});
    forget();
    reader.disconnect();
    await publisher.quit().catch(() => {});
  }
}
