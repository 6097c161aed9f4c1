/**
 * `pnpm bench:subscriptions`: N concurrent graphql-ws subscribers on one gateway process.
 *
 * For each N (BENCH_SUBSCRIBERS, default 1000,5000,10000), a fresh embedded Tributary
 * (server.ts: gateway + subgraphs + in-memory bus + PGlite in one process, as `pnpm dev`) with N
 * RUNNING jobs, and a separate client process (client.ts) that opens N / BENCH_SUBS_PER_CONNECTION
 * graphql-ws connections and subscribes `jobUpdated(jobId)` once per job, in waves of
 * BENCH_SUBSCRIBE_WAVE. Once every subscription is registered and the gateway is idle again, the
 * producer commits BENCH_RATE job changes per second (default 100) for BENCH_SECONDS (default
 * 20), round-robin over the jobs, each with its `job.updated` through the outbox (see server.ts).
 *
 * Reports delivery latency (commit → client receipt) p50/p90/p99/max, messages/s delivered,
 * connections, memory per subscriber ((RSS with N subscribers − RSS before) / N, both after a
 * full GC; heap used likewise), the gateway process's CPU while producing, and its peak RSS.
 * The server process runs with the gateway's shipped node flags (its start script's).
 * Writes bench/results/subscriptions.json (variants below: subscriptions-<producer>[-before].json). A benchmark, not a test: it asserts nothing.
 *
 * BENCH_PRODUCER=bus publishes `job.updated` straight onto the bus instead (see server.ts):
 * the gateway's fan-out without the embedded database's write path; latency is then receipt −
 * publish time, matched per job (both clocks are this machine's).
 * BENCH_DATASOURCE=before runs the gateway's subgraph calls as before FastDataSource (Apollo's
 * default fetcher; see bench/gateway/patch.ts); BENCH_TRACE_ERRORS=1 prints the errors of the queries
 * subscriptions run, unmasked; BENCH_PROFILE=1 CPU-profiles the server while producing.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { call, cpuSeconds, gatewayStartFlags, memory, start, stop } from '../gateway/ipc.ts';
import { percentile, writeResult } from '../results.ts';

const COUNTS = (process.env.BENCH_SUBSCRIBERS ?? '1000,5000,10000').split(',').map(Number);
const RATE = Number(process.env.BENCH_RATE ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const PER_CONNECTION = Number(process.env.BENCH_SUBS_PER_CONNECTION ?? 100);
const WAVE = Number(process.env.BENCH_SUBSCRIBE_WAVE ?? 500);
const here = fileURLToPath(new URL('.', import.meta.url));
const MiB = 1024 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Receipt − publish time, the k-th receipt of a job matched to its k-th publish. */
function matchedLatency(publishes: [string, number][], receipts: [string, number][]): Record<string, number | null> {
  const published = new Map<string, number[]>();
  for (const [job, at] of publishes) {
    const list = published.get(job) ?? [];
    list.push(at);
    published.set(job, list);
  }
  const latencies: number[] = [];
  for (const [job, at] of receipts) {
    const sent = published.get(job)?.shift();
    if (sent !== undefined) latencies.push(at - sent);
  }
  latencies.sort((a, b) => a - b);
  const at = (p: number) => {
    const value = percentile(latencies, p);
    return value === null ? null : Math.round(value);
  };
  return { p50: at(50), p90: at(90), p99: at(99), max: at(100), mean: latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length), matched: latencies.length };
}

interface ServerMemory {
  rss: number;
  heapUsed: number;
}

async function runOne(n: number) {
  console.log(`\n${n} subscribers: starting the embedded system with ${n} RUNNING jobs`);
  const server = await start(join(here, 'server.ts'), [String(n)], { execArgv: ['--expose-gc', ...(await gatewayStartFlags())], env: { NODE_ENV: 'production' }, timeoutMs: 180_000 });
  const { jobIds, token } = server.ready.data as { jobIds: string[]; token: string };
  const url = server.ready.url!;
  const pid = server.child.pid!;
  const client = await start(join(here, 'client.ts'), [], { env: { NODE_ENV: 'production' } });
  try {
    const before = await call<ServerMemory>(server.child, 'memory');
    const connections = Math.ceil(n / PER_CONNECTION);
    const connected = await call<{ connections: number; ms: number }>(client.child, 'connect', { url, token, connections });
    const subscribeStarted = performance.now();
    const jobsRequests0 = await call<number>(server.child, 'jobsRequests');
    for (let i = 0; i < n; i += WAVE) {
      await call(client.child, 'subscribe', { jobIds: jobIds.slice(i, i + WAVE) });
      // The next wave once this one is registered and has read each job's current state (one
      // jobs-subgraph request per subscription), so setup never piles up thousands of queries.
      const expected = Math.min(n, i + WAVE);
      await waitFor(`${expected} subscriptions`, async () => (await call<number>(server.child, 'listeners')) >= expected, 120_000);
      await waitFor(`${expected} initial status reads`, async () => (await call<number>(server.child, 'jobsRequests')) - jobsRequests0 >= expected, 300_000);
    }
    const registeredSeconds = (performance.now() - subscribeStarted) / 1000;
    await sleep(2_000);
    console.log(`  ${connected.connections} connections in ${connected.ms.toFixed(0)} ms; ${n} subscriptions registered and initialised in ${registeredSeconds.toFixed(1)} s`);
    const withSubscribers = await call<ServerMemory>(server.child, 'memory');
    await call(client.child, 'reset');
    const cpu0 = cpuSeconds(pid);
    const clientCpu0 = cpuSeconds(client.child.pid!);
    console.log(`  producing ${RATE} job changes/s for ${SECONDS} s`);
    const produced = await call<{ published: number; failed: number; late: number; issuedSeconds: number; committedSeconds: number; commitToHubMs: Record<string, number | null>; commitMs: Record<string, number | null>; publishes?: [string, number][] }>(server.child, 'produce', { rate: RATE, seconds: SECONDS });
    // Let the last messages arrive (produce already waited 1 s).
    await sleep(1_000);
    const cpu = cpuSeconds(pid) - cpu0;
    const clientCpu = cpuSeconds(client.child.pid!) - clientCpu0;
    const stats = await call<{ messages: number; errors: number; setupErrors: number; completes: number; firstErrors: string[]; slowest: [number, number, string][]; receipts: [string, number][]; latencyMs: Record<string, number | null> }>(client.child, 'stats');
    if (produced.publishes) stats.latencyMs = matchedLatency(produced.publishes, stats.receipts);
    const peak = memory(pid);
    const result = {
      subscribers: n,
      connections: connected.connections,
      subscriptionsPerConnection: PER_CONNECTION,
      registeredSeconds,
      ratePerSecond: RATE,
      seconds: SECONDS,
      published: produced.published,
      publishFailures: produced.failed,
      producerLateTicks: produced.late,
      delivered: stats.messages,
      errors: stats.errors,
      /** Error messages before the measured window (subscriptions that ended during setup). */
      setupErrors: stats.setupErrors,
      /** Subscriptions the server completed (each ends the subscription). */
      completes: stats.completes,
      /** The ten slowest messages: [ms after the window started, latency ms, job id]. */
      slowest: stats.slowest,
      firstErrors: stats.firstErrors,
      messagesPerSecond: stats.messages / produced.issuedSeconds,
      latencyMs: stats.latencyMs,
      /** The part of the latency before the gateway's JobEventHub (outbox, relay, bus). */
      commitToHubMs: produced.commitToHubMs,
      /** How long the producer's transaction took (start → commit), ms. */
      commitMs: produced.commitMs,
      memory: {
        rssBeforeMiB: before.rss / MiB,
        rssWithSubscribersMiB: withSubscribers.rss / MiB,
        rssPerSubscriberKiB: (withSubscribers.rss - before.rss) / n / 1024,
        heapPerSubscriberKiB: (withSubscribers.heapUsed - before.heapUsed) / n / 1024,
        peakRssMiB: peak.peakMiB,
      },
      gatewayCpuSeconds: cpu,
      gatewayCpuShare: cpu / (produced.committedSeconds + 2),
      clientCpuSeconds: clientCpu,
    };
    const l = result.latencyMs;
    console.log(
      `  delivered ${result.delivered}/${result.published} (${result.messagesPerSecond.toFixed(1)} msg/s), errors ${result.errors} (before: ${result.setupErrors}), completed ${result.completes}; producer late ${result.producerLateTicks}; latency p50 ${l.p50} ms, p90 ${l.p90} ms, p99 ${l.p99} ms, max ${l.max} ms; ` +
        (produced.publishes ? '' : `transaction p50 ${result.commitMs.p50?.toFixed(0)} ms, p99 ${result.commitMs.p99?.toFixed(0)} ms; start→hub p50 ${result.commitToHubMs.p50?.toFixed(0)} ms, p99 ${result.commitToHubMs.p99?.toFixed(0)} ms; `) +
        `memory/subscriber ${result.memory.rssPerSubscriberKiB.toFixed(1)} KiB RSS, ${result.memory.heapPerSubscriberKiB.toFixed(1)} KiB heap; gateway CPU ${(result.gatewayCpuShare * 100).toFixed(0)}% of a core`,
    );
    if (stats.firstErrors.length) console.log(`  first errors: ${stats.firstErrors.join(' | ')}`);
    return result;
  } finally {
    await stop(client.child);
    await stop(server.child, 30_000);
  }
}

const results = [];
for (const n of COUNTS) results.push(await runOne(n));
console.table(
  results.map((r) => ({
    subscribers: r.subscribers,
    connections: r.connections,
    'setup s': r.registeredSeconds.toFixed(0),
    'msg/s': r.messagesPerSecond.toFixed(1),
    delivered: `${r.delivered}/${r.published}`,
    errors: r.errors,
    'p50 ms': r.latencyMs.p50,
    'p99 ms': r.latencyMs.p99,
    'max ms': r.latencyMs.max,
    'KiB RSS/sub': r.memory.rssPerSubscriberKiB.toFixed(1),
    'KiB heap/sub': r.memory.heapPerSubscriberKiB.toFixed(1),
    'gateway CPU %': (r.gatewayCpuShare * 100).toFixed(0),
  })),
);
const producer = process.env.BENCH_PRODUCER === 'bus' ? 'bus' : 'outbox';
const dataSource = process.env.BENCH_DATASOURCE === 'before' ? 'before' : 'tree';
// The default run writes subscriptions.json; the variants their own file beside it.
const file = writeResult(producer === 'outbox' && dataSource === 'tree' ? 'subscriptions' : `subscriptions-${producer}${dataSource === 'before' ? '-before' : ''}`, { settings: { rate: RATE, seconds: SECONDS, perConnection: PER_CONNECTION, subscribeWave: WAVE }, dataSource, producer, results });
console.log(`wrote ${file}`);
