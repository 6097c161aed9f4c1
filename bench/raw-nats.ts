import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import { onInterruptDelete, type RawBatching } from './pipeline-settings.ts';

/**
 * Raw @nats-io/jetstream on one stream (file storage, the JetStream default), no database:
 * 512-byte messages published `batch` at a time, each batch's acks awaited together, with
 * `concurrency` batches in flight; a durable pull consumer (explicit acks) consuming with
 * `prefetch` messages requested at a time, each acknowledged as it arrives. Publisher and
 * consumer on connections of their own. Messages/s from the first publish to the last message
 * consumed; the stream (and its consumer) is deleted after.
 */
export async function rawNats(url: string, ns: string, messages: number, { batch, concurrency, prefetch }: RawBatching): Promise<number> {
  const stream = `${ns}_raw`; // stream names may not contain dots
  const subject = `${ns}.raw`;
  const publisherConnection = await connect({ servers: url, name: `${ns}-raw-publisher` });
  const consumerConnection = await connect({ servers: url, name: `${ns}-raw-consumer` });
  const jsm = await jetstreamManager(publisherConnection);
  const forget = onInterruptDelete(async () => {
    await jsm.streams.delete(stream);
  });
  try {
    await jsm.streams.add({ name: stream, subjects: [subject] });
    await jsm.consumers.add(stream, { durable_name: 'raw', ack_policy: AckPolicy.Explicit });
    const consumer = await jetstream(consumerConnection).consumers.get(stream, 'raw');
    const incoming = await consumer.consume({ max_messages: prefetch });
    const read = async () => {
      let received = 0;
      for await (const message of incoming) {
        message.ack();
        if (++received === messages) break;
      }
      if (received < messages) throw new Error(`raw nats: the consumer stopped after ${received} of ${messages} messages`);
    };
    const js = jetstream(publisherConnection);
    const body = Buffer.from(randomBytes(256).toString('hex')); // 512 bytes, as raw amqplib's
    const started = performance.now();
    const reading = read();
    let sent = 0;
    const sender = async () => {
      while (sent < messages) {
        const n = Math.min(batch, messages - sent);
        sent += n;
        await Promise.all(Array.from({ length: n }, () => js.publish(subject, body)));
      }
    };
    await Promise.all([...Array.from({ length: concurrency }, sender), reading]);
    const rate = messages / ((performance.now() - started) / 1000);
    await incoming.close();
    return rate;
  } finally {
    await jsm.streams.delete(stream).catch(() => false);
    forget();
    await consumerConnection.close();
    await publisherConnection.close();
  }
}
