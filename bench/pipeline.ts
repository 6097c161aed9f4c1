/**
 * `pnpm bench:pipeline`: end-to-end event throughput of the Tributary pipeline
 *   publish() in a transaction → outbox → relay (broker acks) → broker → consumer (inbox) → view row
 * on RabbitMQ, Redis Streams or NATS JetStream (`BENCH_BROKER`), each next to its raw client on
 * the same broker in the same run, and their ratio. The pipeline is built as a service builds it:
 * `createTransport` with the broker's URL (as `EVENT_BUS_URL`), and runs twice a round, with the
 * event log on as it ships and off: their ratio is what the log costs. Every side gets the same
 * settings and work; each pipeline run has a namespace and database of its own, deleted after
 * (`deleteBusNamespace`), as are the raw clients' queues and streams, also on Ctrl-C (SIGINT or
 * SIGTERM: the run under way is stopped and deleted before the process exits). A benchmark, not a
 * test: it prints figures and asserts nothing.
 *
 * - `rabbitmq` (the default): raw amqplib (confirm-publish → consume/ack, no database; on a
 *   classic and a quorum queue, once before the rounds, bench/raw-amqp.ts); then, interleaved,
 *   the floor (the same design written by hand on raw pg and amqplib: what outbox → relay → inbox
 *   costs on this machine whoever writes it, so the gap from the floor to the pipeline is what
 *   Tributary's layers add; bench/pipeline-floor.ts) and the pipeline with the log on and off,
 *   after one uncounted warm-up run of the pipeline. Writes bench/results/pipeline.json.
 * - `redis` and `nats`: interleaved, the raw client doing the same messaging work with no
 *   database, and the pipeline with the log on and off, after one uncounted warm-up run of each
 *   (the raw client and the pipeline). Raw Redis (bench/raw-redis.ts): ioredis XADD pipelined in
 *   batches of the relay's size, as many batches in flight as the relay has, into a stream, read
 *   by a consumer group (XREADGROUP, BENCH_PREFETCH entries a read, one XACK per read). Raw NATS
 *   (bench/raw-nats.ts): @nats-io/jetstream publish in the relay's batches awaiting the acks, into
 *   a stream, consumed by a durable pull consumer (BENCH_PREFETCH messages requested at a time,
 *   each acked). Both send raw amqplib's 512-byte bodies. Writes
 *   bench/results/pipeline-redis.json and bench/results/pipeline-nats.json.
 * - `all`: the three in turn.
 *
 * In every round the sides run in an order that rotates each round (slow drift of a shared
 * machine falls on every side alike); the median of the per-round ratios and its spread are
 * reported (bench/results.ts).
 *
 * Env: BENCH_BROKER (rabbitmq | redis | nats | all; default rabbitmq), DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/postgres), AMQP_URL (default amqp://guest:guest@127.0.0.1:5672),
 * REDIS_URL (default redis://127.0.0.1:6379), NATS_URL (default nats://127.0.0.1:4222),
 * BENCH_EVENTS (default 20000), BENCH_RAW_MESSAGES (default: BENCH_EVENTS), BENCH_RELAY_CONCURRENCY
 * (2), BENCH_RELAY_BATCH (500), BENCH_RETAIN_SENT_MS (the relay's retainSentMs, default 3600000 as
 * in the services; 0: rows deleted once confirmed), BENCH_CONSUMER_CONCURRENCY (4),
 * BENCH_MAX_BATCH (100), BENCH_PREFETCH (400), BENCH_ROUNDS (3). The raw Redis and NATS clients
 * take BENCH_RELAY_BATCH, BENCH_RELAY_CONCURRENCY and BENCH_PREFETCH as their batching. Result
 * files carry the commit, dirty flag, Node, CPUs and date (bench/results.ts); BENCH_RESULT_NAME
 * names the file instead (with `all`, suffixed `-redis` and `-nats` for those two).
 */
import { floor } from './pipeline-floor.ts';
import { benchNamespace, BROKER_URLS, BROKERS, deleteLeftovers, EVENTS, PREFETCH, RAW, RELAY_BATCH, RELAY_CONCURRENCY, ROUNDS, settings, type Broker, type Measured, type RawBatching } from './pipeline-settings.ts';
import { pipeline } from './pipeline-side.ts';
import { raw } from './raw-amqp.ts';
import { median, onInterrupt, ratioSummary, writeResult } from './results.ts';

const BROKER = process.env.BENCH_BROKER ?? 'rabbitmq';
if (BROKER !== 'all' && !(BROKERS as readonly string[]).includes(BROKER)) throw new Error(`BENCH_BROKER: "${BROKER}" is not one of ${BROKERS.join(', ')} or all`);
const brokers: readonly Broker[] = BROKER === 'all' ? BROKERS : [BROKER as Broker];
const resultName = process.env.BENCH_RESULT_NAME;
// Ctrl-C: the run under way deletes its namespace, streams and database before the process exits.
onInterrupt(deleteLeftovers);

/**
 * `sides` run once each per round, the order rotating round by round; `run` measures one side,
 * `summarize` turns a round's order and measurements into its result (printed as it ends).
 */
async function interleave<Side extends string, M, R>(sides: readonly Side[], run: (side: Side) => Promise<M>, describe: (side: Side, measured: M) => string, summarize: (round: { round: number; order: Side[]; measured: Record<Side, M> }) => R): Promise<R[]> {
  const rounds: R[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const order = sides.map((_, i) => sides[(i + round - 1) % sides.length]!);
    const measured: Partial<Record<Side, M>> = {};
    for (const side of order) {
      measured[side] = await run(side);
      console.log(`[round ${round}] ${describe(side, measured[side]!)}`);
    }
    rounds.push(summarize({ round, order, measured: measured as Record<Side, M> }));
  }
  return rounds;
}

const pipelineLine = (label: string, m: Measured) => `${label}: ${m.rate.toFixed(0)} events/s end to end (outbox writes alone: ${m.writeRate.toFixed(0)}/s)`;

/** RabbitMQ: raw amqplib before the rounds, then floor and pipeline (log on, off) interleaved. */
async function rabbitMq(): Promise<void> {
  const url = BROKER_URLS.rabbitmq;
  console.log(`pipeline benchmark, RabbitMQ: ${EVENTS} events per side per round, ${ROUNDS} rounds interleaved, ${RAW} raw messages (broker ${new URL(url).host})`);
  const rawNs = benchNamespace();
  const rawClassic = await raw(url, rawNs, RAW, 'classic');
  console.log(`raw amqplib, classic queue : ${rawClassic.toFixed(0)} msg/s`);
  const rawQuorum = await raw(url, rawNs, RAW, 'quorum');
  console.log(`raw amqplib, quorum queue  : ${rawQuorum.toFixed(0)} msg/s`);

  type Side = 'floor' | 'pipeline' | 'pipelineLogOff';
  const LABELS: Record<Side, string> = { floor: 'the same design by hand ', pipeline: 'tributary pipeline      ', pipelineLogOff: 'pipeline, event log off ' };
  // One pipeline run first, not counted: whichever side came first would otherwise pay for
  // warming up the code the other pipeline side then finds compiled.
  console.log('warm-up: one pipeline run, not counted');
  await pipeline(url, true, 'warm-up');
  const rounds = await interleave(
    ['floor', 'pipeline', 'pipelineLogOff'] as const,
    (side) => (side === 'floor' ? floor() : pipeline(url, side === 'pipeline', side === 'pipeline' ? 'pipeline' : 'pipeline, log off')),
    (side, m: Measured) => pipelineLine(LABELS[side], m),
    ({ round, order, measured: { floor: f, pipeline: on, pipelineLogOff: off } }) => {
      const r = { round, order, floor: f, pipeline: on, pipelineLogOff: off, ratio: on.rate / f.rate, logOnToOff: on.rate / off.rate };
      console.log(`[round ${round}] pipeline / by hand: ${r.ratio.toFixed(2)}; event log on / off: ${r.logOnToOff.toFixed(2)}`);
      return r;
    },
  );
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
    settings,
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
  console.log(`wrote ${file}\n`);
}

// Loaded when their broker is benchmarked: a RabbitMQ run needs neither client.
const RAW_CLIENTS: Record<'redis' | 'nats', { label: string; load: () => Promise<(url: string, ns: string, messages: number, batching: RawBatching) => Promise<number>> }> = {
  redis: { label: 'raw ioredis (XADD, XREADGROUP, XACK)', load: async () => (await import('./raw-redis.ts')).rawRedis },
  nats: { label: 'raw @nats-io/jetstream (publish, pull consumer)', load: async () => (await import('./raw-nats.ts')).rawNats },
};

/** Redis or NATS: the raw client and the pipeline (log on, off) interleaved, each warmed up first. */
async function againstRaw(broker: 'redis' | 'nats'): Promise<void> {
  const url = BROKER_URLS[broker];
  const client = RAW_CLIENTS[broker];
  // The relay's batch size and concurrency and the consumer's prefetch: no less than we give ourselves.
  const batching: RawBatching = { batch: RELAY_BATCH, concurrency: RELAY_CONCURRENCY, prefetch: PREFETCH };
  const rawClient = await client.load();
  const runRaw = async (): Promise<{ rate: number }> => ({ rate: await rawClient(url, benchNamespace(), RAW, batching) });
  console.log(`pipeline benchmark, ${broker}: ${EVENTS} events per pipeline side and ${RAW} raw messages per round, ${ROUNDS} rounds interleaved (broker ${new URL(url).host})`);
  // Each side once first, not counted: no side pays for warming up code another then finds compiled.
  console.log(`warm-up: one ${client.label} run and one pipeline run, not counted`);
  await runRaw();
  await pipeline(url, true, 'warm-up');

  type Side = 'raw' | 'pipeline' | 'pipelineLogOff';
  const LABELS: Record<Side, string> = { raw: client.label, pipeline: 'tributary pipeline', pipelineLogOff: 'pipeline, event log off' };
  const rounds = await interleave(
    ['raw', 'pipeline', 'pipelineLogOff'] as const,
    (side) => (side === 'raw' ? runRaw() : pipeline(url, side === 'pipeline', LABELS[side])),
    (side, m: { rate: number; writeRate?: number }) => (m.writeRate === undefined ? `${LABELS[side]}: ${m.rate.toFixed(0)} msg/s` : pipelineLine(LABELS[side], { rate: m.rate, writeRate: m.writeRate })),
    ({ round, order, measured: { raw: r, pipeline: on, pipelineLogOff: off } }) => {
      const result = { round, order, raw: r, pipeline: on, pipelineLogOff: off, ratio: on.rate / r.rate, logOnToOff: on.rate / off.rate };
      console.log(`[round ${round}] pipeline / raw: ${result.ratio.toFixed(2)}; event log on / off: ${result.logOnToOff.toFixed(2)}`);
      return result;
    },
  );
  const ratioToRaw = ratioSummary(rounds.map((r) => r.ratio));
  const logOnToOff = ratioSummary(rounds.map((r) => r.logOnToOff));
  const pipelineRate = median(rounds.map((r) => r.pipeline.rate));
  const logOffRate = median(rounds.map((r) => r.pipelineLogOff.rate));
  const rawRate = median(rounds.map((r) => r.raw.rate));
  console.log(`\nmedians over ${ROUNDS} rounds: pipeline ${pipelineRate.toFixed(0)} events/s (event log off: ${logOffRate.toFixed(0)}), ${client.label} ${rawRate.toFixed(0)} msg/s`);
  console.log(`tributary pipeline / ${client.label}: median ${ratioToRaw.median.toFixed(2)} (spread ${ratioToRaw.min.toFixed(2)}–${ratioToRaw.max.toFixed(2)})`);
  console.log(`event log on / off: median ${logOnToOff.median.toFixed(2)} (spread ${logOnToOff.min.toFixed(2)}–${logOnToOff.max.toFixed(2)})`);
  // With `all`, a BENCH_RESULT_NAME must not have the three brokers overwrite one file.
  if (resultName && brokers.length > 1) process.env.BENCH_RESULT_NAME = `${resultName}-${broker}`;
  const file = writeResult(`pipeline-${broker}`, {
    broker,
    settings: { ...settings, rawBatching: batching },
    raw: rawRate,
    rounds,
    pipeline: pipelineRate,
    pipelineLogOff: logOffRate,
    logOnToOff,
    ratioToRaw,
  });
  if (resultName) process.env.BENCH_RESULT_NAME = resultName;
  console.log(`wrote ${file}\n`);
}

for (const broker of brokers) {
  if (broker === 'rabbitmq') await rabbitMq();
  else await againstRaw(broker);
}
