/**
 * `pnpm bench:gateway`: the federation gateway benchmark, side by side, in one run.
 *
 * The fixture's four subgraphs run in one child process; each gateway in a child process of
 * its own, started, measured and stopped in turn; autocannon runs here. For each target:
 * one request checked against the reference answer (computed once, with no gateway, by
 * calling the subgraphs directly), a warm-up, then a fixed-duration load at fixed
 * concurrency in which every response body must equal the checked one byte for byte
 * (autocannon's `expectBody`, counted as mismatches), then the check again.
 *
 * Targets (BENCH_TARGETS, comma-separated; default direct,apollo,hive,ours,apollo@,hive@,ours@):
 *   direct       the floor: no gateway. The benchmark query's two root fields asked of the
 *                subgraphs that own them, `{ users { id username name } }` on accounts and
 *                `{ topProducts { name price upc weight } }` on products, half the
 *                connections each, at the same time; one request = one subgraph call. No
 *                gateway request can be cheaper than this single hop.
 *   apollo, apollo-fast, hive, hive-cache, hive-rust, ours, ours-before, ours-undici, ours-dedup: see target.ts.
 *   Equal terms: every gateway runs with the same node flags. A target without `@` gets those of
 *   our gateway's start script (how it ships: `exec node --enable-source-maps
 *   --max-semi-space-size=64 dist/main.js`), whichever gateway it is; `apollo@` (`@` and nothing after it) runs on node's
 *   defaults; `hive@--max-old-space-size=512` on the flags given. Ratios are taken only between
 *   targets of the same round on the same flags, and each measurement records its flags.
 *
 * Per target: requests/s, latency p50/p99, the gateway process's CPU seconds in the measured
 * window (/proc/<pid>/stat) and per request, its peak RSS (VmHWM, since it started), the
 * subgraph calls and representations one query costs, ratios to plain Apollo Gateway and to
 * Hive Gateway (same round). Writes bench/results/gateway.json.
 *
 * Then the read-heavy mix (YCSB's workload B shape: 95% reads, 5% writes), on BENCH_MIX_TARGETS
 * (default apollo,hive,hive-cache,ours,ours-cache, all on the start script's flags): of the reads, 3 in 4 the benchmark query and 1 in 4 a
 * `user(id:)` lookup with a random id; the writes rotate over setPrice, setUserName and
 * setReviewBody on random entities, each answered once the fixture's change event is confirmed
 * by RabbitMQ (BENCH_AMQP_URL, default the local broker). `ours-cache` is our gateway with its
 * event-invalidated cache on; it learns of every write only from those events. After each mix
 * the target's answer to the benchmark query must equal a reference computed afresh from the
 * subgraphs ("fresh"); the cache's hit/shared/miss counts come from its /metrics. `ours` is the
 * no-cache control of `ours-cache`; `hive-cache` (Hive Gateway's response cache, a TTL plus
 * invalidation by mutation results) is the anchor, whose freshness is reported like every other.
 * BENCH_MIX_WRITES (0.05) sets the share of writes; BENCH_MIX_TARGETS= (empty) skips the mix.
 *
 * Env: BENCH_CONNECTIONS (50), BENCH_WARMUP (seconds, 5), BENCH_DURATION (seconds, 10),
 * BENCH_ROUNDS (1: every target once per round, rounds interleaved), BENCH_TARGETS,
 * BENCH_GATEWAY_NODE_ARGS (extra node flags for the gateway processes, e.g.
 * `--max-semi-space-size=64`), BENCH_PROFILE (a target whose measured window in round 1 is CPU-profiled through the
 * inspector; the profile goes to bench/results/profiles/, read it with profile-top.ts).
 * A benchmark, not a test: it asserts nothing about timings.
 */
import { deleteNamespace } from '@tributary/core/events';
import { signToken } from '@tributary/gateway';
import autocannon from 'autocannon';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BENCH_QUERY, composeSupergraph, MUTATIONS, SUBGRAPHS, type SubgraphCounters, type SubgraphName } from './fixture.ts';
import { call, cpuSeconds, gatewayStartFlags, memory, start, stop } from './ipc.ts';
import { referenceAnswer } from './reference.ts';
import { RESULTS_DIR, writeResult } from '../results.ts';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 5);
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);
const TARGETS = (process.env.BENCH_TARGETS ?? 'direct,apollo,hive,ours,apollo@,hive@,ours@').split(',').map((t) => t.trim()).filter(Boolean);
const PROFILE = process.env.BENCH_PROFILE;
const MIX_TARGETS = (process.env.BENCH_MIX_TARGETS ?? 'apollo,hive,hive-cache,ours,ours-cache').split(',').map((t) => t.trim()).filter(Boolean);
const MIX_WRITES = Number(process.env.BENCH_MIX_WRITES ?? 0.05);
const AMQP_URL = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const NAMESPACE = `bench_${process.pid}_${randomBytes(3).toString('hex')}`;
const here = fileURLToPath(new URL('.', import.meta.url));
const resultsDir = RESULTS_DIR;
const GATEWAY_START_FLAGS = await gatewayStartFlags();
const EXTRA_FLAGS = (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
/**
 * A gateway target's node flags: BENCH_GATEWAY_NODE_ARGS, then those after its `@` when it has
 * one (`apollo@`: none, node's defaults), else our start script's, whichever gateway it is.
 */
function nodeFlags(target: string): string[] {
  const at = target.indexOf('@');
  const own = at < 0 ? GATEWAY_START_FLAGS : target.slice(at + 1).split(' ').filter(Boolean);
  return [...EXTRA_FLAGS, ...own];
}

interface Measurement {
  target: string;
  /** The gateway process's node flags (direct: none, it has no gateway). */
  nodeFlags: string[];
  round: number;
  rps: number;
  requests: number;
  latencyMs: { p50: number; p99: number; mean: number };
  errors: number;
  non2xx: number;
  mismatches: number;
  timeouts: number;
  /** The gateway process (direct: the subgraphs process). */
  cpuSeconds: number;
  cpuMsPerRequest: number;
  peakRssMiB: number;
  rssAfterMiB: number;
  subgraphCpuSeconds: number;
  /** What one benchmark query cost in subgraph calls (gateways only). */
  perQuery?: { subgraphRequests: number; representations: number; bySubgraph: Record<SubgraphName, SubgraphCounters> };
  identical?: boolean;
  ratioToApollo?: number;
  ratioToHive?: number;
}

interface MixMeasurement {
  target: string;
  nodeFlags: string[];
  rps: number;
  requests: number;
  latencyMs: { p50: number; p99: number; mean: number };
  errors: number;
  non2xx: number;
  cpuSeconds: number;
  peakRssMiB: number;
  /** Its answer to the benchmark query after the mix equals a reference computed afresh. */
  fresh: boolean;
  /** ours-cache: how its cacheable queries were answered, from its /metrics. */
  cache?: Record<string, number>;
  ratioToApollo?: number;
  ratioToHive?: number;
}

const post = (query: string, variables?: Record<string, unknown>) => JSON.stringify(variables ? { query, variables } : { query });

const USER_QUERY = 'query User($id: ID!) { user(id: $id) { id name reviews { id body product { upc name price } } } }';
const pickInt = (n: number) => 1 + Math.floor(Math.random() * n);
let writeTurn = 0;
/** One request of the read-heavy mix. */
function mixBody(): string {
  const r = Math.random();
  if (r < MIX_WRITES) {
    switch (writeTurn++ % 3) {
      case 0:
        return post(MUTATIONS.setPrice, { upc: String(pickInt(5)), price: pickInt(10_000) });
      case 1:
        return post(MUTATIONS.setUserName, { id: String(pickInt(6)), name: `User ${pickInt(1_000)}` });
      default:
        return post(MUTATIONS.setReviewBody, { id: String(pickInt(11)), body: `Review text ${pickInt(1_000)}` });
    }
  }
  return r < MIX_WRITES + (1 - MIX_WRITES) * 0.75 ? post(BENCH_QUERY) : post(USER_QUERY, { id: String(pickInt(6)) });
}

function loadMix(url: string, connections: number, seconds: number, headers: Record<string, string>): Promise<autocannon.Result> {
  return autocannon({
    url,
    connections,
    duration: seconds,
    requests: [{ method: 'POST', headers: { 'content-type': 'application/json', ...headers }, setupRequest: (request) => ({ ...request, body: mixBody() }) }],
  });
}

/** The cache outcome counters of a gateway's /metrics. */
async function cacheCounts(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(new URL('/metrics', url))).text();
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(/^tributary_gateway_cache_requests_total\{result="(\w+)"\} (\d+)/gm)) counts[match[1]!] = Number(match[2]);
  return counts;
}

async function load(urls: string[], bodies: string[], connections: number, seconds: number, headers: Record<string, string>, expectBody?: string): Promise<autocannon.Result[]> {
  return Promise.all(
    urls.map((url, i) =>
      autocannon({
        url,
        method: 'POST',
        connections: Math.max(1, Math.floor(connections / urls.length)),
        duration: seconds,
        headers: { 'content-type': 'application/json', ...headers },
        body: bodies[i]!,
        ...(expectBody !== undefined ? { expectBody } : {}),
      }),
    ),
  );
}

function summarize(results: autocannon.Result[], seconds: number) {
  const requests = results.reduce((n, r) => n + r.requests.total, 0);
  const weighted = (pick: (r: autocannon.Result) => number) => results.reduce((n, r) => n + pick(r) * r.requests.total, 0) / Math.max(1, requests);
  return {
    requests,
    rps: requests / seconds,
    latencyMs: { p50: weighted((r) => r.latency.p50), p99: Math.max(...results.map((r) => r.latency.p99)), mean: weighted((r) => r.latency.average) },
    errors: results.reduce((n, r) => n + r.errors, 0),
    non2xx: results.reduce((n, r) => n + r.non2xx, 0),
    mismatches: results.reduce((n, r) => n + (r.mismatches ?? 0), 0),
    timeouts: results.reduce((n, r) => n + r.timeouts, 0),
  };
}

function diff(before: Record<SubgraphName, SubgraphCounters>, after: Record<SubgraphName, SubgraphCounters>) {
  const bySubgraph = Object.fromEntries(SUBGRAPHS.map((s) => [s, { requests: after[s].requests - before[s].requests, representations: after[s].representations - before[s].representations }])) as Record<SubgraphName, SubgraphCounters>;
  return {
    subgraphRequests: SUBGRAPHS.reduce((n, s) => n + bySubgraph[s].requests, 0),
    representations: SUBGRAPHS.reduce((n, s) => n + bySubgraph[s].representations, 0),
    bySubgraph,
  };
}

async function main() {
  mkdirSync(resultsDir, { recursive: true });
  const mixing = MIX_TARGETS.length > 0;
  const subgraphs = await start(join(here, 'subgraphs-process.ts'), [], { env: { NODE_ENV: 'production', ...(mixing ? { BENCH_AMQP_URL: AMQP_URL, BENCH_NAMESPACE: NAMESPACE } : {}) } });
  const subgraphPid = subgraphs.child.pid!;
  const urls = subgraphs.ready.urls as Record<SubgraphName, string>;
  const supergraphPath = join(tmpdir(), `tributary-bench-supergraph-${process.pid}.graphql`);
  writeFileSync(supergraphPath, composeSupergraph(urls));
  const children = new Set<ChildProcess>([subgraphs.child]);
  const measurements: Measurement[] = [];
  const mix: MixMeasurement[] = [];
  try {
    console.log(`reference answer: ${JSON.stringify({ data: await referenceAnswer(urls) }).length} bytes of JSON, computed from the subgraphs directly`);
    const authSecret = randomBytes(32).toString('base64url');
    const token = await signToken(authSecret, { sub: 'bench', tenant: 'bench', expiresIn: '2h' });
    const headers = { authorization: `Bearer ${token}` };
    const withGateway = async (target: string, env: Record<string, string>, body: (gateway: { child: ChildProcess; pid: number; url: string }) => Promise<void>) => {
      const kind = target.split('@')[0]!;
      const gateway = await start(join(here, 'target.ts'), [kind], {
        execArgv: nodeFlags(target),
        env: { NODE_ENV: 'production', BENCH_SUPERGRAPH: supergraphPath, BENCH_AUTH_SECRET: authSecret, BENCH_AMQP_URL: AMQP_URL, BENCH_NAMESPACE: NAMESPACE, ...env },
      });
      children.add(gateway.child);
      try {
        await body({ child: gateway.child, pid: gateway.child.pid!, url: gateway.ready.url! });
      } finally {
        await stop(gateway.child);
        children.delete(gateway.child);
      }
    };

    for (let round = 1; round <= ROUNDS; round++) {
      for (const target of TARGETS) {
        console.log(`\n[round ${round}] ${target}: warm-up ${WARMUP} s, then ${DURATION} s at ${CONNECTIONS} connections`);
        if (target === 'direct') {
          const rootUrls = [urls.accounts, urls.products];
          const bodies = [post('{ users { id username name } }'), post('{ topProducts { name price upc weight } }')];
          await load(rootUrls, bodies, CONNECTIONS, WARMUP, headers);
          const cpu0 = cpuSeconds(subgraphPid);
          const summary = summarize(await load(rootUrls, bodies, CONNECTIONS, DURATION, headers), DURATION);
          const cpu = cpuSeconds(subgraphPid) - cpu0;
          const mem = memory(subgraphPid);
          measurements.push({ target, nodeFlags: [], round, ...summary, cpuSeconds: cpu, cpuMsPerRequest: (cpu * 1000) / Math.max(1, summary.requests), peakRssMiB: mem.peakMiB, rssAfterMiB: mem.rssMiB, subgraphCpuSeconds: cpu });
          continue;
        }
        const profiling = PROFILE === target && round === 1;
        const profileDir = join(resultsDir, 'profiles');
        if (profiling) mkdirSync(profileDir, { recursive: true });
        await withGateway(target, { BENCH_PROFILE_DIR: profileDir }, async ({ child, pid, url }) => {
          // The mix's writes change the data: every target is checked against the data of now.
          const reference = { data: await referenceAnswer(urls) };
          const ask = async () => {
            const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: post(BENCH_QUERY) });
            return { status: response.status, text: await response.text() };
          };
          const before = await call<Record<SubgraphName, SubgraphCounters>>(subgraphs.child, 'counters');
          const first = await ask();
          const perQuery = diff(before, await call<Record<SubgraphName, SubgraphCounters>>(subgraphs.child, 'counters'));
          let identical = first.status === 200 && isDeepStrictEqual(JSON.parse(first.text), reference);
          if (!identical) console.log(`  ✗ ${target} answered ${first.status} and differs from the reference: ${first.text.slice(0, 300)}`);
          await load([url], [post(BENCH_QUERY)], CONNECTIONS, WARMUP, headers);
          if (profiling) await call(child, 'profileStart');
          const cpu0 = cpuSeconds(pid);
          const subgraphCpu0 = cpuSeconds(subgraphPid);
          const summary = summarize(await load([url], [post(BENCH_QUERY)], CONNECTIONS, DURATION, headers, first.text), DURATION);
          const cpu = cpuSeconds(pid) - cpu0;
          const subgraphCpu = cpuSeconds(subgraphPid) - subgraphCpu0;
          if (profiling) console.log(`  CPU profile of the measured window: ${await call<string>(child, 'profileStop')}`);
          const mem = memory(pid);
          const last = await ask();
          identical &&= last.status === 200 && isDeepStrictEqual(JSON.parse(last.text), reference) && summary.mismatches === 0 && summary.non2xx === 0;
          measurements.push({ target, nodeFlags: nodeFlags(target), round, ...summary, cpuSeconds: cpu, cpuMsPerRequest: (cpu * 1000) / Math.max(1, summary.requests), peakRssMiB: mem.peakMiB, rssAfterMiB: mem.rssMiB, subgraphCpuSeconds: subgraphCpu, perQuery, identical });
        });
        const m = measurements.at(-1)!;
        console.log(`  ${m.rps.toFixed(1)} req/s, p50 ${m.latencyMs.p50} ms, p99 ${m.latencyMs.p99} ms, CPU ${m.cpuSeconds.toFixed(1)} s (${m.cpuMsPerRequest.toFixed(2)} ms/req), peak RSS ${m.peakRssMiB.toFixed(0)} MiB, identical: ${m.identical}`);
      }
    }

    for (const target of MIX_TARGETS) {
      console.log(`\n[read-heavy mix, ${(MIX_WRITES * 100).toFixed(0)}% writes] ${target}: warm-up ${WARMUP} s, then ${DURATION} s at ${CONNECTIONS} connections`);
      await withGateway(target, {}, async ({ pid, url }) => {
        await loadMix(url, CONNECTIONS, WARMUP, headers);
        const counts0 = target === 'ours-cache' ? await cacheCounts(url) : undefined;
        const cpu0 = cpuSeconds(pid);
        const summary = summarize([await loadMix(url, CONNECTIONS, DURATION, headers)], DURATION);
        const cpu = cpuSeconds(pid) - cpu0;
        const counts1 = counts0 && (await cacheCounts(url));
        // The last write's event may still be on its way to the gateway: give it a moment.
        await sleep(500);
        const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: post(BENCH_QUERY) });
        const fresh = response.status === 200 && isDeepStrictEqual(await response.json(), { data: await referenceAnswer(urls) });
        const cache = counts1 && Object.fromEntries(Object.entries(counts1).map(([k, v]) => [k, v - (counts0[k] ?? 0)]));
        mix.push({ target, nodeFlags: nodeFlags(target), ...summary, cpuSeconds: cpu, peakRssMiB: memory(pid).peakMiB, fresh, ...(cache ? { cache } : {}) });
        console.log(`  ${summary.rps.toFixed(1)} req/s, p50 ${summary.latencyMs.p50} ms, p99 ${summary.latencyMs.p99} ms, CPU ${cpu.toFixed(1)} s, errors ${summary.errors + summary.non2xx}, fresh after: ${fresh}${cache ? `, cache ${JSON.stringify(cache)}` : ''}`);
      });
    }
  } finally {
    for (const child of children) await stop(child);
    rmSync(supergraphPath, { force: true });
    if (mixing) await deleteNamespace(AMQP_URL, NAMESPACE, []).catch(() => {});
  }

  // A ratio only between gateways on the same node flags (and, for the query, in the same round).
  const sameTerms = (a: { nodeFlags: string[] }, b: { nodeFlags: string[] }) => a.nodeFlags.join(' ') === b.nodeFlags.join(' ');
  for (const m of measurements) {
    const apollo = measurements.find((x) => x.round === m.round && x.target.split('@')[0] === 'apollo' && sameTerms(x, m));
    const hive = measurements.find((x) => x.round === m.round && x.target.split('@')[0] === 'hive' && sameTerms(x, m));
    if (apollo && m.target !== 'direct') m.ratioToApollo = m.rps / apollo.rps;
    if (hive && m.target !== 'direct') m.ratioToHive = m.rps / hive.rps;
  }
  for (const m of mix) {
    const apollo = mix.find((x) => x.target.split('@')[0] === 'apollo' && sameTerms(x, m));
    const hive = mix.find((x) => x.target.split('@')[0] === 'hive' && sameTerms(x, m));
    if (apollo) m.ratioToApollo = m.rps / apollo.rps;
    if (hive) m.ratioToHive = m.rps / hive.rps;
  }
  report(measurements);
  if (mix.length > 0) {
    console.log(`\nread-heavy mix: ${(MIX_WRITES * 100).toFixed(0)}% writes, ${CONNECTIONS} connections, ${DURATION} s measured after ${WARMUP} s warm-up`);
    console.table(
      mix.map((m) => ({
        target: m.target,
        'node flags': m.nodeFlags.join(' ') || '(defaults)',
        'req/s': m.rps.toFixed(1),
        'p50 ms': m.latencyMs.p50,
        'p99 ms': m.latencyMs.p99,
        'CPU s': m.cpuSeconds.toFixed(1),
        'peak RSS MiB': m.peakRssMiB.toFixed(0),
        '× apollo': m.ratioToApollo?.toFixed(2) ?? '—',
        '× hive': m.ratioToHive?.toFixed(2) ?? '—',
        errors: m.errors + m.non2xx,
        'fresh after': m.fresh ? 'yes' : 'NO',
        cache: m.cache ? Object.entries(m.cache).map(([k, v]) => `${k} ${v}`).join(', ') : '—',
      })),
    );
  }
  const file = writeResult('gateway', {
    settings: { connections: CONNECTIONS, warmupSeconds: WARMUP, durationSeconds: DURATION, rounds: ROUNDS, startScriptFlags: GATEWAY_START_FLAGS, extraFlags: EXTRA_FLAGS, query: BENCH_QUERY },
    measurements,
    mix: { writes: MIX_WRITES, measurements: mix },
  });
  console.log(`\nwrote ${file}`);
}

function report(measurements: Measurement[]) {
  const range = (values: number[], digits: number) => {
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    return lo === hi || values.length === 1 ? lo.toFixed(digits) : `${lo.toFixed(digits)}–${hi.toFixed(digits)}`;
  };
  const rows = [...new Set(measurements.map((m) => m.target))].map((target) => {
    const ms = measurements.filter((m) => m.target === target);
    const pick = (f: (m: Measurement) => number | undefined, digits: number) => {
      const values = ms.map(f).filter((v): v is number => v !== undefined && Number.isFinite(v));
      return values.length ? range(values, digits) : '—';
    };
    return {
      target,
      'node flags': ms[0]!.target === 'direct' ? 'n/a' : ms[0]!.nodeFlags.join(' ') || '(defaults)',
      'req/s': pick((m) => m.rps, 1),
      'p50 ms': pick((m) => m.latencyMs.p50, 0),
      'p99 ms': pick((m) => m.latencyMs.p99, 0),
      'CPU s': pick((m) => m.cpuSeconds, 1),
      'CPU ms/req': pick((m) => m.cpuMsPerRequest, 2),
      'peak RSS MiB': pick((m) => m.peakRssMiB, 0),
      'subgraph calls/query': pick((m) => m.perQuery?.subgraphRequests, 0),
      'reps/query': pick((m) => m.perQuery?.representations, 0),
      '× apollo': pick((m) => m.ratioToApollo, 2),
      '× hive': pick((m) => m.ratioToHive, 2),
      identical: target === 'direct' ? 'n/a' : ms.every((m) => m.identical) ? 'yes' : 'NO',
    };
  });
  console.log(`\n${CONNECTIONS} connections, ${DURATION} s measured after ${WARMUP} s warm-up, ${ROUNDS} round(s) (ranges over rounds); × apollo and × hive only between targets on the same node flags`);
  console.table(rows);
}

await main();
