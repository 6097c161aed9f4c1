/**
 * bench:pipeline's Tributary side: publish() in a transaction → outbox → OutboxRelay → the
 * broker's transport → EventConsumer (inbox) → a view row, on whichever broker the URL names,
 * through `createTransport` as a service builds it from `EVENT_BUS_URL`.
 */
import { progress } from '@tributary/core';
import { dropDatabase, queryRun, valuesPlaceholders } from '@tributary/core/db';
import { createTransport, deadLetterQueueName, deleteBusNamespace, EventConsumer, OutboxRelay, publish, retryQueueName } from '@tributary/core/events';
import { randomBytes } from 'node:crypto';
import {
  benchNamespace,
  CONSUMER_CONCURRENCY,
  DATABASE_URL,
  documentUploaded,
  EVENTS,
  logger,
  MAX_BATCH,
  onInterruptDelete,
  openBenchDatabase,
  PREFETCH,
  RELAY_BATCH,
  RELAY_CONCURRENCY,
  RETAIN_SENT_MS,
  writeAll,
  type Measured,
} from './pipeline-settings.ts';

/** The log as the services have it by default (EVENT_LOG_RETENTION 7d,10GB). */
const RETENTION = { maxAgeMs: 7 * 86_400_000, maxBytes: 10e9 };

/** One run of the pipeline on the broker at `url`, in a namespace and database of its own, both deleted after; `log` false turns the event log off. */
export async function pipeline(url: string, log: boolean, label: string): Promise<Measured> {
  const ns = benchNamespace();
  const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
  const config = { EVENT_BUS_URL: url, TRIBUTARY_NAMESPACE: ns, EVENT_LOG: log ? ('on' as const) : ('off' as const), EVENT_LOG_RETENTION: RETENTION };
  const relayTransport = createTransport(config, logger, `${ns}-relay`);
  const consumerTransport = createTransport(config, logger, `${ns}-consumer`);
  let applied = 0;
  const bar = progress(label, EVENTS);
  let finished!: () => void;
  const all = new Promise<void>((resolve) => (finished = resolve));
  const open = () => openBenchDatabase(dbName);
  const [writerDb, relayDb, consumerDb] = [await open(), await open(), await open()];
  const consumer = new EventConsumer({
    service: 'bench',
    name: 'view',
    types: ['document.uploaded'],
    db: consumerDb,
    transport: consumerTransport,
    logger,
    prefetch: PREFETCH,
    maxBatch: MAX_BATCH,
    concurrency: CONSUMER_CONCURRENCY,
    // A view fed in batches: one multi-row statement with bind parameters per transaction.
    batchHandler: async (events, { em }) => {
      const params: string[] = [];
      for (const event of events) if (event.dataschema === 'document.uploaded/v1') params.push(event.data.documentId, event.data.jobId, event.data.title, event.tenantid);
      if (params.length === 0) return;
      await queryRun(em, `insert into bench_view (document_id, job_id, title, tenant_id) values ${valuesPlaceholders(params.length / 4, 4)}`, params);
    },
    onApplied: (n) => {
      applied += n;
      bar.tick(n);
      if (applied >= EVENTS) finished();
    },
  });
  const relay = new OutboxRelay({
    db: relayDb,
    transport: relayTransport,
    logger,
    batchSize: RELAY_BATCH,
    concurrency: RELAY_CONCURRENCY,
    retainSentMs: RETAIN_SENT_MS,
  });
  // RabbitMQ cannot list a namespace's queues over AMQP: the consumer's queue, its retry tiers and DLQ are named.
  const queues = [consumer.queue, deadLetterQueueName(consumer.queue), ...consumer.retryDelaysMs.map((_, tier) => retryQueueName(consumer.queue, tier))];
  // Stop everything, then delete what the run made: once, whether the run ends or is interrupted.
  let cleaning: Promise<void> | undefined;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      try {
        await consumer.stop();
        await relay.stop();
        await relayTransport.close();
        await consumerTransport.close();
        for (const db of [writerDb, relayDb, consumerDb]) await db.close();
      } finally {
        await deleteBusNamespace(url, ns, queues);
        await dropDatabase(DATABASE_URL, dbName);
      }
    })());
  const forget = onInterruptDelete(cleanUp);
  // Whatever happens, nothing of this run stays behind on the broker or in PostgreSQL.
  try {
    await relayTransport.start();
    await consumerTransport.start();
    await consumer.start();
    await relay.start();
    const started = performance.now();
    const writeRate = await writeAll((n) => writerDb.fork().transactional((em) => publish(em, 'bench', Array.from({ length: n }, documentUploaded))).then(() => undefined));
    await all;
    const rate = EVENTS / ((performance.now() - started) / 1000);
    bar.done();
    const [row] = await consumerDb.fork().execute<{ n: string }[]>('select count(*) as n from bench_view');
    if (Number(row!.n) !== EVENTS) throw new Error(`view has ${row!.n} rows, expected ${EVENTS}`);
    return { rate, writeRate };
  } finally {
    await cleanUp();
    forget();
  }
}
