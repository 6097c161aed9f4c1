/**
 * `pnpm bench:ai`: the AI stage at the model's speed. The repo's OpenAI-compatible test server
 * plays a provider whose every chat completion takes L ms and which refuses (429, Retry-After)
 * any call above C at once; N documents are uploaded through the gateway at once, each with a
 * `jobCompleted` subscription, and the benchmark prints documents/s next to the physical limit
 * C / L (no process can finish more than C calls per L), and their ratio. Per mode: the system
 * as deployed (six processes on PostgreSQL and RabbitMQ, one analysis process) and embedded
 * (`pnpm dev`: one process, PGlite, the in-memory bus); `floor` adds bench:deployed's hand-written
 * floor (bench/floor.ts: raw pg, amqplib and HTTP, a process per process of the system, the same
 * transactions, hops and consumers, insights and webhooks included), whose analysis sends the
 * system's requests (the OpenAIProvider's chat completion: its prompt, `response_format` and
 * parse; the ChunkedAnalyzer's chunks; the OpenAIEmbedder's embedding) with the same response
 * cache, token ledger and pause read around them written on raw pg, C calls at most; so the gap
 * from what the machine allows whoever writes it to the system is measured in the same run. The
 * analysis processes run with ANALYSIS_CONCURRENCY = C unless told otherwise.
 *
 * Modes run in BENCH_AI_ROUNDS rounds, the order reversed from one round to the next (floor,
 * processes; processes, floor; …), each run on a fresh system and test server; each mode's
 * documents/s (and CPU per document) over the floor's is taken within a round, and reported per
 * round and as the median and range (min–max) over the rounds. The long document runs in the
 * first round only. A benchmark, not a test: it asserts nothing.
 *
 * Env: BENCH_AI_DOCS (N, default 500), BENCH_AI_LATENCY_MS (L, default 2000), BENCH_AI_CAP (C,
 * default 64), BENCH_AI_CONCURRENCY (ANALYSIS_CONCURRENCY, default C), BENCH_AI_WARMUP (documents
 * analysed first, not counted: JIT, connection pools; default 20, 0 for none), BENCH_AI_LONG_KB (then
 * one long document of this many kB alone: its chunks, calls, time and tokens; default 300, 0
 * for none), BENCH_AI_MODES (default
 * "processes,embedded"; also "floor"), BENCH_AI_ROUNDS (default 3 when "floor" is compared with
 * another mode, else 1), BENCH_AI_TIMEOUT_S (per mode, default 600), BENCH_WS_CLIENTS (default 8),
 * BENCH_PROFILE (processes to run under --cpu-prof, as in bench:deployed; profiles in bench/results/profiles/),
 * DATABASE_URL, AMQP_URL (defaults: the local services). Writes bench/results/ai.json (bench/results.ts:
 * with the commit, a dirty flag, Node's version, the CPU count and the date).
 */
import { startOpenAITestServer } from '@tributary/ai/testing';
import type { Client } from 'graphql-ws';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { cpuBetween, snapshot, type CpuSnapshot } from './cpu.ts';
import { ratioSummary, writeResult } from './results.ts';
import { disposeAll, openClients, ROOT, runBenchmark, startSystem, within, type Mode, type RunningSystem } from './system.ts';

const number = (name: string, fallback: number) => {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return value;
};
const DOCS = Math.round(number('BENCH_AI_DOCS', 500));
const LATENCY_MS = number('BENCH_AI_LATENCY_MS', 2000);
const CAP = Math.round(number('BENCH_AI_CAP', 64));
const CONCURRENCY = Math.round(number('BENCH_AI_CONCURRENCY', CAP));
const TIMEOUT_S = number('BENCH_AI_TIMEOUT_S', 600);
const WS_CLIENTS = Math.round(number('BENCH_WS_CLIENTS', 8));
const WARMUP = Math.round(Number(process.env.BENCH_AI_WARMUP ?? 20));
const LONG_KB = Number(process.env.BENCH_AI_LONG_KB ?? 300);
const PROFILE = new Set((process.env.BENCH_PROFILE ?? '').split(',').map((p) => p.trim()).filter(Boolean));
const MODES = (process.env.BENCH_AI_MODES || 'processes,embedded').split(',').map((m) => m.trim()) as Mode[];
for (const mode of MODES) if (mode !== 'processes' && mode !== 'embedded' && mode !== 'floor') throw new Error(`BENCH_AI_MODES: unknown mode ${mode} (processes, embedded, floor)`);
const COMPARES_FLOOR = MODES.includes('floor') && MODES.length > 1;
const ROUNDS = Math.round(number('BENCH_AI_ROUNDS', COMPARES_FLOOR ? 3 : 1));
const API_KEY = 'sk-bench';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const JOB_COMPLETED = 'subscription($id: ID!) { jobCompleted(jobId: $id) { status error { code } document { analysis { provider } } } }';

interface ModeResult {
  mode: Mode;
  /** Which of the BENCH_AI_ROUNDS rounds (from 0). */
  round: number;
  docs: number;
  accepted: number;
  completed: number;
  failed: number;
  errors: Record<string, number>;
  seconds: number;
  /** Completed documents over the whole run: first upload's start to last jobCompleted. */
  docsPerSecond: number;
  limit: number;
  ratio: number;
  chatCalls: number;
  maxInFlight: number;
  refused: number;
  /** CPU ms per completed document by process group (the bench process includes the test server). */
  cpuPerDocMs: Record<string, number>;
  /** From the first upload's start, s: the last upload answered, the first and last chat call received, the last jobCompleted. */
  timeline: { uploadsDone: number; firstCall: number | null; lastCall: number | null; lastCompleted: number };
  /** The long document, alone after the burst: its chunks, the calls made, the time to jobCompleted, the tokens counted. */
  long: { kb: number; chunks: number; truncated: boolean; calls: number; seconds: number; idealSeconds: number; tokens: { prompt: number; completion: number }; status: string } | null;
  /** Warn/error log lines of every process, counted by message. */
  logs: Record<string, Record<string, number>>;
  /** Chat calls received in each second from the first upload's start. */
  callsPerSecond: number[];
  /**
   * Where the time beyond ⌈N / C⌉ × L went, ms: `firstWave`, from the first call to the C-th (the
   * slots filling while the uploads arrive); `slotGap`, p50 and p90, from an answer to the call
   * that took its slot (the j-th call received took the slot of the (j − C)-th answer), which
   * every chain of calls pays once per link.
   */
  overheadMs: { firstWave: number; slotGap: { p50: number; p90: number } } | null;
}

/** A distinct text per document: the response cache must not answer any of them. */
const text = (n: number) =>
  `Report ${n} (${randomBytes(6).toString('hex')}): revenue grew in every region while support costs fell. ` +
  'The team shipped the new onboarding flow, and churn among new customers dropped for the third quarter running.';

/** Upload `documents` documents at once, each with its jobCompleted subscription; resolves when every one has its message. */
async function burst(running: RunningSystem, clients: Client[], dispatcher: Agent, documents: number, label: string) {
  const errors: Record<string, number> = {};
  const count = (code: string) => (errors[code] = (errors[code] ?? 0) + 1);
  let accepted = 0;
  let failed = 0;
  let completed = 0;
  const started = performance.now();
  let last = started;
  let uploadsDone = started;
  await within(
    Promise.all(
      Array.from({ length: documents }, async (_, n) => {
        const response = await request(running.httpUrl, {
          method: 'POST',
          dispatcher,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${running.token}` },
          body: JSON.stringify({ query: UPLOAD, variables: { input: { title: `Report ${n}`, content: text(n) } } }),
        }).then((r) => r.body.json() as Promise<{ data?: { uploadDocument: { job: { id: string } } }; errors?: { extensions?: { code?: string } }[] }>);
        uploadsDone = Math.max(uploadsDone, performance.now());
        const id = response.data?.uploadDocument.job.id;
        if (!id) return void count(response.errors?.[0]?.extensions?.code ?? 'UPLOAD_FAILED');
        accepted++;
        const message = await new Promise<{ status: string; error: { code: string } | null } | undefined>((resolve) => {
          let got: { status: string; error: { code: string } | null } | undefined;
          clients[n % clients.length]!.subscribe<{ jobCompleted: { status: string; error: { code: string } | null } }>(
            { query: JOB_COMPLETED, variables: { id } },
            {
              next: (m) => {
                if (m.errors) count(String(m.errors[0]?.extensions?.code ?? 'SUBSCRIPTION_ERROR'));
                got ??= m.data?.jobCompleted;
              },
              error: () => resolve(got ?? (count('NETWORK'), undefined)),
              complete: () => resolve(got),
            },
          );
        });
        last = Math.max(last, performance.now());
        if (message?.status === 'COMPLETED') completed++;
        else if (message) {
          failed++;
          count(message.error?.code ?? message.status);
        }
      }),
    ),
    TIMEOUT_S * 1000,
    `${label}: ${documents} documents`,
  );
  return { started, last, uploadsDone, accepted, completed, failed, errors };
}

/** One long document alone through the gateway: what it took. */
async function longDocument(running: RunningSystem, clients: Client[], dispatcher: Agent, callsSince: () => number): Promise<ModeResult['long']> {
  const paragraphs: string[] = [];
  for (let i = 0, size = 0; size < LONG_KB * 1000; i++) {
    const paragraph = `Section ${i}. ${text(i)}`;
    paragraphs.push(paragraph);
    size += paragraph.length + 2;
  }
  const started = performance.now();
  const response = await request(running.httpUrl, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${running.token}` },
    body: JSON.stringify({ query: UPLOAD, variables: { input: { title: 'Annual report', content: paragraphs.join('\n\n') } } }),
  }).then((r) => r.body.json() as Promise<{ data?: { uploadDocument: { job: { id: string } } }; errors?: unknown[] }>);
  const id = response.data?.uploadDocument.job.id;
  if (!id) throw new Error(`long document upload failed: ${JSON.stringify(response.errors)}`);
  type Done = { status: string; document: { analysis: { chunks: number; truncated: boolean; tokens: { prompt: number; completion: number } } | null } };
  const done = await within(
    new Promise<Done | undefined>((resolve, reject) => {
      let got: Done | undefined;
      clients[0]!.subscribe<{ jobCompleted: Done }>(
        { query: 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { chunks truncated tokens { prompt completion } } } } }', variables: { id } },
        { next: (m) => void (got ??= m.data?.jobCompleted), error: reject, complete: () => resolve(got) },
      );
    }),
    TIMEOUT_S * 1000,
    'long document',
  );
  const seconds = (performance.now() - started) / 1000;
  const analysis = done?.document.analysis;
  const chunks = analysis?.chunks ?? 0;
  // Chunks in rounds of C calls, then the combining call: the least time it can take.
  const idealSeconds = ((Math.ceil(chunks / CAP) + (chunks > 1 ? 1 : 0)) * LATENCY_MS) / 1000;
  return { kb: LONG_KB, chunks, truncated: analysis?.truncated ?? false, calls: callsSince(), seconds, idealSeconds, tokens: analysis?.tokens ?? { prompt: 0, completion: 0 }, status: done?.status ?? 'NO_MESSAGE' };
}

function overheads(chats: { receivedAt: number; answeredAt: number }[]): ModeResult['overheadMs'] {
  if (chats.length <= CAP) return null;
  const received = chats.map((c) => c.receivedAt).sort((a, b) => a - b);
  const answered = chats.map((c) => c.answeredAt).filter((t) => t > 0).sort((a, b) => a - b);
  const gaps = received.slice(CAP).map((at, j) => at - answered[j]!).filter(Number.isFinite).sort((a, b) => a - b);
  const at = (q: number) => gaps[Math.min(gaps.length - 1, Math.floor(q * gaps.length))]!;
  return { firstWave: received[CAP - 1]! - received[0]!, slotGap: { p50: at(0.5), p90: at(0.9) } };
}

async function runMode(mode: Mode, round: number): Promise<ModeResult> {
  const server = await startOpenAITestServer({ apiKey: API_KEY, latencyMs: LATENCY_MS, maxConcurrent: CAP });
  let system: RunningSystem | undefined;
  let clients: Client[] = [];
  const dispatcher = new Agent({ connections: 256, keepAliveTimeout: 30_000 });
  try {
    system = await startSystem({ name: 'current', dir: ROOT, commit: 'HEAD', changedFiles: 0 }, mode, {
      profile: PROFILE,
      env: { OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: server.baseURL, AI_MODEL: 'bench-model', ANALYSIS_CONCURRENCY: String(CONCURRENCY), ...(mode === 'embedded' ? { TRIBUTARY_DATA_DIR: 'memory://' } : {}) },
    });
    const running = system;
    clients = await openClients(running.wsUrl, running.token, WS_CLIENTS);
    if (WARMUP > 0) await burst(running, clients, dispatcher, WARMUP, 'warm-up');
    server.resetChatStats();
    const firstRequest = server.requests.length;
    const before: CpuSnapshot = snapshot(running.namespace);
    const startedAt = Date.now();
    const { started, last, uploadsDone, accepted, completed, failed, errors } = await burst(running, clients, dispatcher, DOCS, mode);
    const seconds = (last - started) / 1000;
    const afterBurst = snapshot(running.namespace);
    const cpu = cpuBetween(before, afterBurst, running.pids);
    const cpuPerDocMs: Record<string, number> = {};
    for (const [name, ms] of Object.entries({ ...cpu.ms, bench: cpu.loadgenMs })) cpuPerDocMs[name] = ms / Math.max(1, completed);
    cpuPerDocMs.total = Object.values(cpuPerDocMs).reduce((sum, v) => sum + v, 0);
    const stats = server.chatStats();
    const limit = CAP / (LATENCY_MS / 1000);
    const docsPerSecond = completed / seconds;

    const burstRequests = server.requests.length;
    const long = LONG_KB > 0 && round === 0 ? await longDocument(running, clients, dispatcher, () => server.requests.slice(burstRequests).filter((r) => r.endpoint === 'chat').length) : null;
    const chats = server.requests.slice(firstRequest, burstRequests).filter((r) => r.endpoint === 'chat');
    const calls = chats.map((r) => (r.receivedAt - startedAt) / 1000);
    return {
      mode,
      round,
      docs: DOCS,
      accepted,
      completed,
      failed,
      errors,
      seconds,
      docsPerSecond,
      limit,
      ratio: docsPerSecond / limit,
      chatCalls: calls.length,
      maxInFlight: stats.maxInFlight,
      refused: stats.refused,
      cpuPerDocMs,
      long,
      logs: Object.fromEntries([...running.log].filter(([, entry]) => entry.counts.size > 0).map(([name, entry]) => [name, Object.fromEntries(entry.counts)])),
      callsPerSecond: calls.reduce<number[]>((buckets, t) => {
        const i = Math.floor(t);
        while (buckets.length <= i) buckets.push(0);
        buckets[i]! += 1;
        return buckets;
      }, []),
      overheadMs: overheads(chats),
      timeline: { uploadsDone: (uploadsDone - started) / 1000, firstCall: calls.length ? Math.min(...calls) : null, lastCall: calls.length ? Math.max(...calls) : null, lastCompleted: seconds },
    };
  } finally {
    await disposeAll(clients);
    await dispatcher.close();
    const problems = (await system?.stop()) ?? [];
    if (problems.length > 0) console.error(problems.join('\n'));
    await server.close();
  }
}

async function main(): Promise<void> {
  console.log(`AI benchmark: ${DOCS} documents at once through the gateway; the provider answers each chat completion after ${LATENCY_MS} ms and refuses calls above ${CAP} at once; ANALYSIS_CONCURRENCY=${CONCURRENCY}`);
  console.log(`physical limit C / L = ${CAP} / ${LATENCY_MS / 1000} s = ${(CAP / (LATENCY_MS / 1000)).toFixed(1)} docs/s per analysis process; ${MODES.join(', ')} in ${ROUNDS} round(s), the order reversed each round`);
  const results: ModeResult[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // The order reversed every round (A B, B A, A B, …), so a shared machine's drift falls on every mode alike.
    for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
      const r = await runMode(mode, round);
      results.push(r);
      const errors = Object.entries(r.errors).map(([code, n]) => `${code} ${n}`).join(', ') || 'none';
      const label = ROUNDS > 1 ? `${mode} ${round + 1}/${ROUNDS}` : mode;
      console.log(
        `${label.padEnd(14)} ${r.completed}/${r.docs} completed in ${r.seconds.toFixed(1)} s: ${r.docsPerSecond.toFixed(1)} docs/s = ${r.ratio.toFixed(2)} × the limit; ` +
          `chat calls ${r.chatCalls}, at most ${r.maxInFlight} in flight, ${r.refused} refused (429); failed ${r.failed}; errors: ${errors}`,
      );
      const indent = ''.padEnd(14);
      for (const [name, counts] of Object.entries(r.logs)) console.log(`${indent} ${name} logged: ${Object.entries(counts).map(([line, n]) => `${n}× ${line}`).join('; ')}`);
      const t = r.timeline;
      console.log(`${indent} CPU ms per document: ${Object.entries(r.cpuPerDocMs).map(([name, ms]) => `${name} ${ms.toFixed(1)}`).join(', ')}`);
      console.log(`${indent} chat calls per second: ${r.callsPerSecond.join(' ')}`);
      if (r.overheadMs) {
        const o = r.overheadMs;
        console.log(`${indent} the ${CAP} slots filled in ${o.firstWave} ms; from an answer to the next call in its slot: p50 ${o.slotGap.p50} ms, p90 ${o.slotGap.p90} ms`);
      }
      if (r.long) {
        const l = r.long;
        console.log(
          `${indent} a ${l.kb} kB document alone: ${l.status}, ${l.chunks} chunks${l.truncated ? ' (truncated)' : ''}, ${l.calls} calls, ${l.seconds.toFixed(1)} s (at least ${l.idealSeconds.toFixed(1)} s), tokens ${l.tokens.prompt} in / ${l.tokens.completion} out`,
        );
      }
      console.log(`${indent} uploads answered by ${t.uploadsDone.toFixed(1)} s; chat calls received from ${t.firstCall?.toFixed(1) ?? '—'} s to ${t.lastCall?.toFixed(1) ?? '—'} s; last jobCompleted at ${t.lastCompleted.toFixed(1)} s`);
    }
  }
  // Each mode over the floor, within each round, then the median and range over the rounds.
  const toFloor = MODES.includes('floor')
    ? MODES.filter((mode) => mode !== 'floor').map((mode) => {
        const rounds = Array.from({ length: ROUNDS }, (_, round) => {
          const floor = results.find((r) => r.mode === 'floor' && r.round === round)!;
          const r = results.find((x) => x.mode === mode && x.round === round)!;
          return { round, docsPerSecond: r.docsPerSecond / floor.docsPerSecond, cpuPerDoc: r.cpuPerDocMs.total! / floor.cpuPerDocMs.total!, floor: floor.docsPerSecond, mode: r.docsPerSecond };
        });
        return { mode, rounds, docsPerSecond: ratioSummary(rounds.map((r) => r.docsPerSecond)), cpuPerDoc: ratioSummary(rounds.map((r) => r.cpuPerDoc)) };
      })
    : [];
  for (const c of toFloor) {
    console.log(`\n${c.mode} ÷ floor, round by round: docs/s ${c.mode} / floor = ratio; CPU per document ratio`);
    for (const r of c.rounds) console.log(`  round ${r.round + 1}: ${r.mode.toFixed(1)} / ${r.floor.toFixed(1)} = ${r.docsPerSecond.toFixed(2)}; CPU ${r.cpuPerDoc.toFixed(2)}`);
    const s = (x: ReturnType<typeof ratioSummary>) => `${x.median.toFixed(2)} (${x.min.toFixed(2)}–${x.max.toFixed(2)})`;
    console.log(`  over ${c.rounds.length} round(s), median (min–max): docs/s ratio ${s(c.docsPerSecond)}, CPU per document ratio ${s(c.cpuPerDoc)}`);
  }
  const file = writeResult('ai', { docs: DOCS, latencyMs: LATENCY_MS, cap: CAP, concurrency: CONCURRENCY, rounds: ROUNDS, modes: MODES, ratio: { toFloor }, results });
  console.log(`\nwrote ${file}`);
}

await runBenchmark(main);
