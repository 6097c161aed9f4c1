/**
 * `pnpm bench:pipeline`: end-to-end event throughput of the Tributary pipeline
 *   publish() in a transaction → outbox → relay (confirms) → RabbitMQ → consumer (inbox) → view row
 * next to raw amqplib (confirm-publish → consume/ack, no database) on the same broker, in the
 * same run, and their ratio. Between the two, the same design written by hand on raw pg and amqplib
 * (the floor): what outbox → relay → inbox costs on this machine whoever writes it, so the gap
 * from the floor to the pipeline is what Tributary's layers add. The pipeline runs twice a round,
 * with the event log (a stream bound to the exchange, issue 29) on as it ships and off: their
 * ratio is what the log costs. A benchmark, not a test: it
 * prints figures and asserts nothing.
 *
 * Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), AMQP_URL (default
 * amqp://guest:guest@127.0.0.1:5672), BENCH_EVENTS (default 20000), BENCH_RAW_MESSAGES (default: BENCH_EVENTS),
 * BENCH_RELAY_CONCURRENCY (2), BENCH_RELAY_BATCH (500), BENCH_RETAIN_SENT_MS (the relay's retainSentMs, default
 * 3600000 as in the services; 0: rows deleted once confirmed), BENCH_CONSUMER_CONCURRENCY (4), BENCH_MAX_BATCH (100),
 * BENCH_PREFETCH (400), BENCH_ROUNDS (3: floor, pipeline and pipeline with the log off interleaved,
 * the order rotating each round, after one uncounted warm-up run of the pipeline; the median of the
 * per-round ratios and its spread are reported). Writes
 * bench/results/pipeline.json (bench/results.ts: with commit, dirty flag, Node, CPUs, date).
 */
import { createLogger, progress } from '@tributary/core';
import { dropDatabase, Migration, openDatabase, OUTBOX_CHANNEL, queryRun, valuesPlaceholders, type Database } from '@tributary/core/db';
import { EventConsumer, OutboxRelay, publish, RabbitMqTransport, type NewEvent } from '@tributary/core/events';
import type { ConsumeMessage } from 'amqplib';
import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { connectAmqp, startFloorRelay } from './floor-relay.ts';
import { inTransaction as inTransactionOn } from './pg.ts';
import { raw } from './raw-amqp.ts';
import { median, ratioSummary, writeResult } from './results.ts';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const RAW = Number(process.env.BENCH_RAW_MESSAGES ?? EVENTS);
const RELAY_CONCURRENCY = Number(process.env.BENCH_RELAY_CONCURRENCY ?? 2);
const RELAY_BATCH = Number(process.env.BENCH_RELAY_BATCH ?? 500);
// The services' default (sent rows kept 1 h, then pruned) unless told otherwise; 0 deletes each
// batch's rows in the transaction that claimed them.
const RETAIN_SENT_MS = Number(process.env.BENCH_RETAIN_SENT_MS ?? 3_600_000);
const CONSUMER_CONCURRENCY = Number(process.env.BENCH_CONSUMER_CONCURRENCY ?? 4);
const MAX_BATCH = Number(process.env.BENCH_MAX_BATCH ?? 100);
const PREFETCH = Number(process.env.BENCH_PREFETCH ?? 400);
/** Rounds of floor and pipeline, interleaved (the order alternates each round). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Writers in parallel, each publishing this many events per transaction. */
const WRITERS = 4;
const PER_TX = 100;
const logger = createLogger({ service: 'bench', level: process.env.LOG_LEVEL ?? 'warn' });
const ns = `bench_${randomBytes(4).toString('hex')}`;

class ViewTable extends Migration {
  override up(): void {
    this.addSql('create table bench_view (document_id text primary key, job_id text not null, title text not null, tenant_id text not null)');
  }
}

const openBenchDatabase = (dbName: string) =>
  openDatabase({ service: 'bench', target: { kind: 'postgres', url: DATABASE_URL, dbName }, entities: [], migrations: [{ name: '9000-bench-view', class: ViewTable }], logger, poolSize: 12 });

const text = 'Quarterly revenue grew while costs fell; the team shipped the new pipeline on time. '.repeat(3);
const documentUploaded = (): NewEvent<'document.uploaded'> => {
  const documentId = randomUUID();
  return { type: 'document.uploaded', subject: documentId, tenantId: 'bench', data: { documentId, jobId: randomUUID(), title: 'Benchmark document', text, contentType: 'text/plain', uploadedAt: new Date().toISOString() } };
};

/** Run `write(n)` from WRITERS writers until EVENTS events are written; the write rate. */
async function writeAll(write: (n: number) => Promise<void>): Promise<number> {
  const started = performance.now();
  let written = 0;
  const writer = async () => {
    while (written < EVENTS) {
      const n = Math.min(PER_TX, EVENTS - written);
      written += n;
      await write(n);
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, writer));
  return EVENTS / ((performance.now() - started) / 1000);
}

/** The pipeline; `log` false turns the event log (the stream bound to the exchange) off. */
async function pipeline(log: boolean): Promise<{ rate: number; writeRate: number }> {
  const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
  const open = () => openBenchDatabase(dbName);
  const writerDb: Database = await open();
  const relayDb: Database = await open();
  const consumerDb: Database = await open();
  // The log as the services have it by default (EVENT_LOG_RETENTION 7d,10GB), or off.
  const logOption = log ? { maxAgeMs: 7 * 86_400_000, maxBytes: 10e9 } : (false as const);
  const relayTransport = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-relay`, log: logOption });
  const consumerTransport = new RabbitMqTransport({ url: AMQP_URL, namespace: ns, logger, connectionName: `${ns}-consumer`, log: logOption });
  await relayTransport.start();
  await consumerTransport.start();
  let applied = 0;
  const bar = progress(log ? 'pipeline' : 'pipeline, log off', EVENTS);
  let finished!: () => void;
  const all = new Promise<void>((resolve) => (finished = resolve));
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
  await consumer.start();
  const relay = new OutboxRelay({
    db: relayDb,
    transport: relayTransport,
    logger,
    batchSize: RELAY_BATCH,
    concurrency: RELAY_CONCURRENCY,
    retainSentMs: RETAIN_SENT_MS,
  });
  await relay.start();

  const started = performance.now();
  const writeRate = await writeAll((n) => writerDb.fork().transactional((em) => publish(em, 'bench', Array.from({ length: n }, documentUploaded))).then(() => undefined));
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
async function floor(): Promise<{ rate: number; writeRate: number }> {
  const dbName = `tributary_bench_${randomBytes(4).toString('hex')}`;
  await (await openBenchDatabase(dbName)).close(); // the same tables, made by the same migrations
  const url = new URL(DATABASE_URL);
  url.pathname = `/${dbName}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 12 });
  // pool.end() resolves before the sessions are gone; dropping the database then ends them.
  pool.on('error', () => {});
  const exchange = `${ns}.floor.events`;
  const queue = `${ns}.floor.view`;
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

console.log(`pipeline benchmark: ${EVENTS} events per side per round, ${ROUNDS} rounds interleaved, ${RAW} raw messages (broker ${new URL(AMQP_URL).host})`);
const rawClassic = await raw(AMQP_URL, ns, RAW, 'classic');
console.log(`raw amqplib, classic queue : ${rawClassic.toFixed(0)} msg/s`);
const rawQuorum = await raw(AMQP_URL, ns, RAW, 'quorum');
console.log(`raw amqplib, quorum queue  : ${rawQuorum.toFixed(0)} msg/s`);

type Side = 'floor' | 'pipeline' | 'pipelineLogOff';
const SIDES: readonly Side[] = ['floor', 'pipeline', 'pipelineLogOff'];
const LABELS: Record<Side, string> = { floor: 'the same design by hand ', pipeline: 'tributary pipeline      ', pipelineLogOff: 'pipeline, event log off ' };
interface Round {
  round: number;
  order: Side[];
  floor: { rate: number; writeRate: number };
  /** As it ships: the event log on. */
  pipeline: { rate: number; writeRate: number };
  pipelineLogOff: { rate: number; writeRate: number };
  ratio: number;
  /** Events/s with the log on over off: what the log costs (issue 29: at most 10%). */
  logOnToOff: number;
}
// One pipeline run first, not counted: whichever side came first would otherwise pay for
// warming up the code the other pipeline side then finds compiled.
console.log('warm-up: one pipeline run, not counted');
await pipeline(true);
const rounds: Round[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  // The order rotates each round: slow drift of a shared machine falls on every side alike.
  const order = SIDES.map((_, i) => SIDES[(i + round - 1) % SIDES.length]!);
  const measured: Partial<Record<Side, { rate: number; writeRate: number }>> = {};
  for (const side of order) {
    measured[side] = side === 'floor' ? await floor() : await pipeline(side === 'pipeline');
    console.log(`[round ${round}] ${LABELS[side]}: ${measured[side]!.rate.toFixed(0)} events/s end to end (outbox writes alone: ${measured[side]!.writeRate.toFixed(0)}/s)`);
  }
  const { floor: f, pipeline: on, pipelineLogOff: off } = measured as Record<Side, { rate: number; writeRate: number }>;
  const r: Round = { round, order, floor: f, pipeline: on, pipelineLogOff: off, ratio: on.rate / f.rate, logOnToOff: on.rate / off.rate };
  rounds.push(r);
  console.log(`[round ${round}] pipeline / by hand: ${r.ratio.toFixed(2)}; event log on / off: ${r.logOnToOff.toFixed(2)}`);
}
const ratioToFloor = ratioSummary(rounds.map((r) => r.ratio));
const logOnToOff = ratioSummary(rounds.map((r) => r.logOnToOff));
const pipelineRate = median(rounds.map((r) => r.pipeline.rate));
const logOffRate = median(rounds.map((r) => r.pipelineLogOff.rate));
const floorRate = median(rounds.map((r) => r.floor.rate));
console.log(`\nmedians over ${ROUNDS} rounds: pipeline ${pipelineRate.toFixed(0)} events/s (event log off: ${logOffRate.toFixed(0)}), by hand ${floorRate.toFixed(0)} events/s`);
console.log(`tributary pipeline / the same design by hand: median ${ratioToFloor.median.toFixed(2)} (spread ${ratioToFloor.min.toFixed(2)}–${ratioToFloor.max.toFixed(2)})`);
console.log(`event log on / off: median ${logOnToOff.median.toFixed(2)} (spread ${logOnToOff.min.toFixed(2)}–${logOnToOff.max.toFixed(2)})`);
console.log(`pipeline, ratio to raw amqplib (quorum, the queue type the pipeline uses): ${(pipelineRate / rawQuorum).toFixed(2)}; by hand: ${(floorRate / rawQuorum).toFixed(2)}`);
const file = writeResult('pipeline', {
  settings: { events: EVENTS, rawMessages: RAW, rounds: ROUNDS, relayConcurrency: RELAY_CONCURRENCY, relayBatch: RELAY_BATCH, retainSentMs: RETAIN_SENT_MS, consumerConcurrency: CONSUMER_CONCURRENCY, maxBatch: MAX_BATCH, prefetch: PREFETCH, writers: WRITERS, eventsPerTransaction: PER_TX },
  rawClassic,
  rawQuorum,
  rounds,
  pipeline: pipelineRate,
  pipelineLogOff: logOffRate,
  logOnToOff,
  byHand: floorRate,
  ratioToByHand: ratioToFloor,
  ratioToQuorumRaw: pipelineRate / rawQuorum,
  byHandRatioToQuorumRaw: floorRate / rawQuorum,
});
console.log(`wrote ${file}`);
