/**
 * Raw amqplib on the same broker, the ceiling `bench:pipeline` measures against: one connection,
 * 512-byte persistent messages, confirms with 512 in flight, prefetch 200, no database.
 */
import { connect } from 'amqplib';
import { randomBytes } from 'node:crypto';

/** Raw amqplib: one connection, 512-byte persistent messages, confirms with 512 in flight, prefetch 200. */
export async function raw(AMQP_URL: string, ns: string, RAW: number, queueType: 'classic' | 'quorum'): Promise<number> {
  const connection = await connect(AMQP_URL);
  const queue = `${ns}.raw.${queueType}`;
  const setup = await connection.createChannel();
  await setup.assertQueue(queue, { durable: true, arguments: queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : {} });
  const body = randomBytes(256).toString('hex'); // 512 bytes
  const consumer = await connection.createChannel();
  await consumer.prefetch(200);
  let received = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  await consumer.consume(queue, (message) => {
    if (!message) return;
    consumer.ack(message);
    if (++received === RAW) done();
  });
  const publisher = await connection.createConfirmChannel();
  const started = performance.now();
  let sent = 0;
  let inFlight = 0;
  await new Promise<void>((resolve, reject) => {
    const pump = () => {
      while (inFlight < 512 && sent < RAW) {
        inFlight++;
        sent++;
        publisher.sendToQueue(queue, Buffer.from(body), { persistent: true }, (error) => {
          if (error) return reject(error);
          inFlight--;
          if (sent === RAW && inFlight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  await all;
  const rate = RAW / ((performance.now() - started) / 1000);
  await setup.deleteQueue(queue);
  await connection.close();
  return rate;
}
