/**
 * `pnpm bench:pipeline`: end-to-end event throughput of the Tributary pipeline
 *   publish() in a transaction → outbox → relay (confirms) → RabbitMQ → consumer (inbox) → view row
 * next to raw amqplib (confirm-publish → consume/ack, no database) on the same broker, in the
 * same run, and their ratio. A benchmark, not a test: it prints figures and asserts nothing.
 *
 * Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), AMQP_URL (default
 * amqp://guest:guest@127.0.0.1:5672), BENCH_EVENTS (default 20000), BENCH_RAW_MESSAGES (default: BENCH_EVENTS),
 * BENCH_RELAY_CONCURRENCY (2), BENCH_RELAY_BATCH (500), BENCH_RETAIN_SENT_MS (the relay's retainSentMs, default
 * 3600000 as in the services; 0: rows deleted once confirmed), BENCH_CONSUMER_CONCURRENCY (4), BENCH_MAX_BATCH (100),
 * BENCH_PREFETCH (400).
 */
import { createLogger, progress } from '@tributary/core';
import { dropDatabase, Migration, openDatabase, type Database } from '@tributary/core/db';
import { EventConsumer, OutboxRelay, publish, RabbitMqTransport, type NewEvent } from '@tributary/core/events';
import { connect } from 'amqplib';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const RAW = Number(process.env.BENCH_RAW_MESSAGES ?? EVENTS);
const logger = createLogger({ service: 'bench', level: process.env.LOG_LEVEL ?? 'warn' });
const ns = `bench_${randomBytes(4).toString('hex')}`;

/** Raw amqplib: one connection, 512-byte persistent messages, confirms with 512 in flight, prefetch 200. */
async function raw(queueType: 'classic' | 'quorum'): Promise<number> {
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

class ViewTable extends Migration {
  override up(): void {
    this.addSql('create table bench_view (document_id text primary key, job_id text not null, title text not null, tenant_id text not null)');
  }
}

async function pipeline(): Promise<{ rate: number; writeRate: number }> {
  const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
  const target = { kind: 'postgres' as const, url: DATABASE_URL, dbName };
  const open = () => openDatabase({ service: 'bench', target, entities: [], migrations: [{ name: '9000-bench-view', class: ViewTable }], logger, poolSize: 12 });
  const writerDb: Database = await open();
  const relayDb: Database = await open();
  const consumerDb: Database = await open();
  const relayTransport = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-relay` });
  const consumerTransport = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-consumer` });
  await relayTransport.start();
  await consumerTransport.start();
  let applied = 0;
  const bar = progress('pipeline', EVENTS);
  let finished!: () => void;
  const all = new Promise<void>((resolve) => (finished = resolve));
  const consumer = new EventConsumer({
    service: 'bench',
    name: 'view',
    types: ['document.uploaded'],
    db: consumerDb,
    transport: consumerTransport,
    logger,
    prefetch: Number(process.env.BENCH_PREFETCH ?? 400),
    maxBatch: Number(process.env.BENCH_MAX_BATCH ?? 100),
    concurrency: Number(process.env.BENCH_CONSUMER_CONCURRENCY ?? 4),
    // A view fed in batches: one multi-row statement per transaction.
    batchHandler: async (events, { em }) => {
      const rows = events.flatMap((event) => (event.dataschema === 'document.uploaded/v1' ? [[event.data.documentId, event.data.jobId, event.data.title, event.tenantid]] : []));
      if (rows.length === 0) return;
      await em.execute(`insert into bench_view (document_id, job_id, title, tenant_id) values ${rows.map(() => '(?, ?, ?, ?)').join(', ')}`, rows.flat(), 'run');
    },
    onApplied: (n) => {
      applied += n;
      bar.tick(n);
      if (applied >= EVENTS) finished();
    },
  });
  await consumer.start();
  const relay = new OutboxRelay({
    db: relayDb,
    transport: relayTransport,
    logger,
    batchSize: Number(process.env.BENCH_RELAY_BATCH ?? 500),
    concurrency: Number(process.env.BENCH_RELAY_CONCURRENCY ?? 2),
    // The services' default (sent rows kept 1 h, then pruned) unless told otherwise; 0 deletes
    // each batch's rows in the transaction that claimed them.
    retainSentMs: Number(process.env.BENCH_RETAIN_SENT_MS ?? 3_600_000),
  });
  await relay.start();

  const text = 'Quarterly revenue grew while costs fell; the team shipped the new pipeline on time. '.repeat(3);
  const event = (): NewEvent<'document.uploaded'> => {
    const documentId = randomUUID();
    return { type: 'document.uploaded', subject: documentId, tenantId: 'bench', data: { documentId, jobId: randomUUID(), title: 'Benchmark document', text, contentType: 'text/plain', uploadedAt: new Date().toISOString() } };
  };
  const started = performance.now();
  const perTx = 100;
  let written = 0;
  const writer = async () => {
    while (written < EVENTS) {
      const n = Math.min(perTx, EVENTS - written);
      written += n;
      await writerDb.fork().transactional((em) => publish(em, 'bench', Array.from({ length: n }, event)));
    }
  };
  await Promise.all([writer(), writer(), writer(), writer()]);
  const writeRate = EVENTS / ((performance.now() - started) / 1000);
  await all;
  const rate = EVENTS / ((performance.now() - started) / 1000);
  bar.done();
  const [row] = await consumerDb.fork().execute<{ n: string }[]>('select count(*) as n from bench_view');
  if (Number(row!.n) !== EVENTS) throw new Error(`view has ${row!.n} rows, expected ${EVENTS}`);

  await consumer.stop();
  await relay.stop();
  await consumerTransport.deleteQueue({ queue: consumer.queue, retryDelaysMs: consumer.retryDelaysMs });
  await consumerTransport.deleteExchange();
  await relayTransport.close();
  await consumerTransport.close();
  for (const db of [writerDb, relayDb, consumerDb]) await db.close();
  await dropDatabase(DATABASE_URL, dbName);
  return { rate, writeRate };
}

console.log(`pipeline benchmark: ${EVENTS} events through the pipeline, ${RAW} raw messages (broker ${new URL(AMQP_URL).host})`);
const rawClassic = await raw('classic');
console.log(`raw amqplib, classic queue : ${rawClassic.toFixed(0)} msg/s`);
const rawQuorum = await raw('quorum');
console.log(`raw amqplib, quorum queue  : ${rawQuorum.toFixed(0)} msg/s`);
const result = await pipeline();
const best = Math.max(rawClassic, rawQuorum);
console.log(`tributary pipeline         : ${result.rate.toFixed(0)} events/s end to end (outbox writes alone: ${result.writeRate.toFixed(0)}/s)`);
console.log(`ratio to raw (best of both): ${(result.rate / best).toFixed(2)}`);
console.log(`ratio to raw (quorum, the queue type the pipeline uses): ${(result.rate / rawQuorum).toFixed(2)}`);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/pipeline.json', import.meta.url),
  JSON.stringify({ at: new Date().toISOString(), events: EVENTS, rawMessages: RAW, rawClassic, rawQuorum, pipeline: result.rate, outboxWrites: result.writeRate, ratioToBestRaw: result.rate / best, ratioToQuorumRaw: result.rate / rawQuorum }, null, 2),
);
