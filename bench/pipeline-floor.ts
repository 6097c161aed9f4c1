/**
 * bench:pipeline's floor on RabbitMQ: the pipeline's design written by hand on raw pg and
 * amqplib (see {@link floor}).
 */
import { dropDatabase, OUTBOX_CHANNEL } from '@tributary/core/db';
import type { NewEvent } from '@tributary/core/events';
import type { ConsumeMessage } from 'amqplib';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { connectAmqp, startFloorRelay } from './floor-relay.ts';
import { inTransaction as inTransactionOn } from './pg.ts';
import { benchNamespace, BROKER_URLS, CONSUMER_CONCURRENCY, DATABASE_URL, documentUploaded, EVENTS, MAX_BATCH, onInterruptDelete, openBenchDatabase, PREFETCH, RELAY_BATCH, RELAY_CONCURRENCY, RETAIN_SENT_MS, writeAll, type Measured } from './pipeline-settings.ts';

/** `($1, $2, …), (…)`: numbered placeholders for the hand-written floor's multi-row inserts. */
function numbered(rows: number, columns: number): string {
  const list: string[] = [];
  for (let r = 0; r < rows; r++) list.push(`(${Array.from({ length: columns }, (_, c) => `$${r * columns + c + 1}`).join(', ')})`);
  return list.join(', ');
}

/**
 * The floor: the same design and batch sizes written by hand on raw pg and amqplib, on the same
 * tables (the core migrations, with their NOTIFY trigger) and the same topology (topic exchange →
 * quorum queue), on connections with the transport's socket settings. Writers insert outbox rows
 * in transactions; relays are the services' shape (bench/floor-relay.ts, shared with
 * bench:deployed's floor): woken by the commit's NOTIFY, `begin` and the claim (FOR UPDATE SKIP
 * LOCKED, marking the rows sent or deleting them) in one round trip, `commit` after the confirms;
 * a consumer inserts inbox and view rows in one transaction per batch and acks after the commit. No ORM, no contract validation, no tracing, no metrics, no retry or
 * dead-letter path: what this architecture costs on this machine whoever writes it.
 */
export async function floor(): Promise<Measured> {
  const ns = benchNamespace();
  const AMQP_URL = BROKER_URLS.rabbitmq;
  const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
  await (await openBenchDatabase(dbName)).close(); // the same tables, made by the same migrations
  const url = new URL(DATABASE_URL);
  url.pathname = `/${dbName}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 12 });
  // pool.end() resolves before the sessions are gone; dropping the database then ends them.
  pool.on('error', () => {});
  const exchange = `${ns}.floor.events`;
  const queue = `${ns}.floor.view`;
  const forget = onInterruptDelete(async () => {
    const connection = await connectAmqp(AMQP_URL);
    const channel = await connection.createChannel();
    await channel.deleteQueue(queue);
    await channel.deleteExchange(exchange);
    await connection.close();
    await dropDatabase(DATABASE_URL, dbName);
  });
  const relayConnection = await connectAmqp(AMQP_URL);
  const consumerConnection = await connectAmqp(AMQP_URL);
  const setup = await relayConnection.createChannel();
  await setup.assertExchange(exchange, 'topic', { durable: true });
  await setup.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await setup.bindQueue(queue, exchange, 'document.uploaded');
  const inTransaction = <T>(work: (client: pg.PoolClient) => Promise<T>) => inTransactionOn(pool, work);

  let applied = 0;
  let finished!: () => void;
  const all = new Promise<void>((resolve) => (finished = resolve));
  const consumer = await consumerConnection.createChannel();
  await consumer.prefetch(PREFETCH);
  const waiting: ConsumeMessage[] = [];
  let active = 0;
  const apply = (batch: ConsumeMessage[]) =>
    inTransaction(async (client) => {
      const events = batch.map((message) => JSON.parse(message.content.toString('utf8')) as ReturnType<typeof envelope>);
      const inbox: string[] = [];
      for (const event of events) inbox.push('bench.view', event.id, event.type);
      const inserted = await client.query<{ event_id: string }>(`insert into tributary_inbox (consumer, event_id, type) values ${numbered(events.length, 3)} on conflict do nothing returning event_id`, inbox);
      const fresh = new Set(inserted.rows.map((row) => row.event_id));
      const view: string[] = [];
      for (const event of events) if (fresh.has(event.id)) view.push(event.data.documentId, event.data.jobId, event.data.title, event.tenantid);
      if (view.length > 0) await client.query(`insert into bench_view (document_id, job_id, title, tenant_id) values ${numbered(view.length / 4, 4)}`, view);
      return view.length / 4;
    }).then((n) => {
      for (const message of batch) consumer.ack(message);
      applied += n;
      if (applied >= EVENTS) finished();
    });
  const pump = () => {
    while (active < CONSUMER_CONCURRENCY && waiting.length > 0) {
      active++;
      void apply(waiting.splice(0, MAX_BATCH)).finally(() => {
        active--;
        pump();
      });
    }
  };
  await consumer.consume(queue, (message) => {
    if (!message) return;
    waiting.push(message);
    setImmediate(pump);
  });

  const stopRelay = await startFloorRelay({
    databaseUrl: url.toString(),
    channel: await relayConnection.createConfirmChannel(),
    exchange,
    table: 'tributary_outbox',
    notifyChannel: OUTBOX_CHANNEL,
    batchSize: RELAY_BATCH,
    concurrency: RELAY_CONCURRENCY,
    retain: RETAIN_SENT_MS > 0,
  });

  const started = performance.now();
  const writeRate = await writeAll((n) =>
    inTransaction(async (client) => {
      const params: string[] = [];
      for (let i = 0; i < n; i++) {
        const event = envelope(documentUploaded());
        params.push(event.id, event.type, event.tenantid, JSON.stringify(event));
      }
      await client.query(`insert into tributary_outbox (event_id, type, tenant_id, payload) values ${numbered(n, 4)}`, params);
    }),
  );
  await all;
  const rate = EVENTS / ((performance.now() - started) / 1000);
  await stopRelay();
  const { rows } = await pool.query<{ n: string }>('select count(*) as n from bench_view');
  if (Number(rows[0]!.n) !== EVENTS) throw new Error(`floor view has ${rows[0]!.n} rows, expected ${EVENTS}`);
  await setup.deleteQueue(queue);
  await setup.deleteExchange(exchange);
  await relayConnection.close();
  await consumerConnection.close();
  await pool.end();
  await dropDatabase(DATABASE_URL, dbName);
  forget();
  return { rate, writeRate };
}

/** The envelope `publish()` writes, built by hand (no validation) for the floor. */
function envelope(event: NewEvent<'document.uploaded'>) {
  const id = randomUUID();
  return {
    id,
    type: event.type,
    source: 'bench',
    specversion: '1.0',
    time: new Date().toISOString(),
    dataschema: 'document.uploaded/v1',
    subject: event.subject,
    traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
    tenantid: event.tenantId!,
    data: event.data,
  };
}

