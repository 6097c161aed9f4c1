/**
 * `pnpm bench:deployed`: capacity of the system as deployed — the gateway and the five subgraphs
 * as six OS processes, each started the way its package's `start` script (and the image's CMD)
 * starts it, on the real PostgreSQL and RabbitMQ — for this working tree and for a baseline commit
 * checked out in a git worktree, under the same open-loop load.
 *
 * Per rate, uploads start on schedule (`started + n * 1000 / rate`) whether or not earlier ones
 * have finished; each one's client subscribes to `jobCompleted` right after the upload returns.
 * It reports uploads attempted / accepted / completed, messages per subscriber, error codes,
 * upload → jobCompleted p50/p95/p99/max, the drain time (last upload's start → last
 * jobCompleted), the completion throughput, and CPU per completed job of every process involved:
 * the six processes (each one's process tree), PostgreSQL (the backends on the run's databases,
 * the postmaster and its shared background processes; the JSON also has every PostgreSQL process,
 * exited backends included, which counts other clients of a shared server too), RabbitMQ (the
 * broker's beam.smp and its children, shared with any other client) and the load generator
 * itself, read from /proc. The machine's CPU time that none of these account for is printed as
 * `bg%` (of one core): another user's work on a shared machine shows there. The JSON also has
 * each system's CPU while idle (ms/s), a floor under CPU per job that weighs most at low rates,
 * and the warn/error log lines of every process, counted by message.
 * Capacity = the highest rate whose p99 is within BENCH_CAPACITY_P99_MS and which completed every
 * upload, each subscriber getting its one message, with no error.
 * A benchmark, not a test: it prints figures and asserts nothing.
 *
 * Method (why the figures are comparable):
 *   - A fresh system per (tree, mode, rate, round): new databases, RabbitMQ namespace and processes, so
 *     every rate starts from empty tables and queues and its CPU window holds only its own work.
 *     Each one first gets BENCH_WARMUP uploads at 10/s (not counted: JIT, connection pools, the
 *     query planner's caches), then BENCH_IDLE_MS of quiet before the measured window opens.
 *   - The window runs from the first upload to the end of the drain (every accepted job has its
 *     message, or BENCH_DRAIN_TIMEOUT_S); then the system is stopped and cleaned up and the
 *     machine idles BENCH_IDLE_MS before the next one.
 *   - Per rate, BENCH_ROUNDS rounds, each running every tree and mode once, the order reversed
 *     from one round to the next (floor, system; system, floor; floor, system; … and on across
 *     rates), so slow drift on a shared machine falls on all alike. A ratio (the system over the
 *     floor, the current tree over the baseline: p50, p99 and CPU per job) is taken within each
 *     round, and reported per round and as the median and range (min–max) over the rounds.
 *   - OPENAI_* and inherited database, broker and port settings are dropped from the children's
 *     environment: analysis runs its offline analyzer, so the figures are the system's own cost.
 *
 * Env:
 *   BENCH_RATES (uploads/s, comma list, default "10,20,30,40,60,80,100"; run in ascending order),
 *   BENCH_SECONDS (per rate, default 15), BENCH_CAPACITY_P99_MS (default 1000),
 *   BENCH_FIND_CAPACITY (default 1: per tree and mode, stop after the first rate that misses),
 *   BENCH_DRAIN_TIMEOUT_S (default 300), BENCH_WARMUP (uploads, default 20; 0 for none),
 *   BENCH_IDLE_MS (default 1500), BENCH_WS_CLIENTS (graphql-ws sockets, round-robin, default 8),
 *   BENCH_START_TIMEOUT_S (per process to be ready, default 90),
 *   BENCH_TREES ("current", "baseline" or "both", default both),
 *   BENCH_BASELINE (a commit, default {@link DEFAULT_BASELINE}; "none" skips it),
 *   BENCH_MODES (default "processes"; also "embedded": all in one process as `pnpm dev` runs it,
 *   PGlite and the in-memory bus; "embedded-real": one process on PostgreSQL and RabbitMQ — both
 *   through `startEmbedded`, current tree only, in a child process so its CPU is its own;
 *   "floor": the same design written by hand on raw pg, amqplib, node:http and ws, one process
 *   per process of the system (documents, analysis, jobs, insights, webhooks, gateway) on
 *   PostgreSQL and RabbitMQ, doing the same work per job: the same transactions and events, the
 *   insights fold and the webhooks look-up, the same offline analysis and embedding through
 *   @tributary/ai (bench/floor.ts): what this machine allows whoever writes it, run like a tree;
 *   BENCH_FLOOR_DISPATCH "relay" (default: a relay
 *   publishes what commits, as in the services) or "direct" (the committing process publishes its
 *   own rows after the commit, a relay sweeps what is left)),
 *   BENCH_ROUNDS (rounds per rate, default 3 when BENCH_MODES has both "floor" and "processes",
 *   else 1),
 *   BENCH_PROFILE (processes of the current tree to run under --cpu-prof, e.g. "jobs,gateway" or
 *   "all"; profiles in bench/results/profiles/, read with bench/gateway/profile-top.ts),
 *   BENCH_PG_LOG_CHECK (default 1: count "deadlock detected" lines PostgreSQL logged during the
 *   run), BENCH_PG_LOG (default /var/log/postgresql/postgresql-15-main.log),
 *   DATABASE_URL, AMQP_URL (defaults: the local services).
 * Writes bench/results/deployed.json (bench/results.ts: with the commit, a dirty flag, Node's
 * version, the CPU count and the date), `ratio.systemToFloor` holding the floor comparison.
 */
import type { Client } from 'graphql-ws';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { cpuBetween, snapshot, type CpuFigures, type CpuSnapshot } from './cpu.ts';
import { onInterrupt, percentile, ratioSummary, writeResult } from './results.ts';
import { AMQP_URL, cleanupLive, DATABASE_URL, disposeAll, live, openClients, PROCESSES, ROOT, runBenchmark, sleep, startSystem, within, type Mode, type RunningSystem, type Tree } from './system.ts';

/** The last commit before the load work. */
const DEFAULT_BASELINE = 'd31708b';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const JOB_COMPLETED = 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { summary } } } }';

function numberEnv(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min}, got ${JSON.stringify(raw)}`);
  return value;
}
function listEnv(name: string, fallback: string): string[] {
  return (process.env[name] || fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
const flagEnv = (name: string, fallback: boolean) => (process.env[name] === undefined || process.env[name] === '' ? fallback : !['0', 'false', 'no', 'off'].includes(process.env[name]!.toLowerCase()));

// ---------------------------------------------------------------------------------------------
// Load

const PARAGRAPHS = [
  'The quarterly report shows revenue growth across every region. Customers praised the new analytics dashboard, while support tickets about onboarding fell sharply.',
  'The board approved further investment in machine learning infrastructure and data quality. Risks remain in supply chain costs and in the hiring plan for the second half.',
  'Field engineers reported that the new sensors cut maintenance visits by a third, though battery life in cold weather fell short of the specification.',
  'The city council debated the transit budget for hours; residents asked for more frequent buses at night and safer crossings near the schools.',
  'Our clinical trial enrolled its last patient in March. Early results suggest fewer side effects than the standard treatment, with similar efficacy.',
  'The migration to the new billing platform finished ahead of schedule. Invoices now go out a day earlier, and disputed charges are down by a quarter.',
];

function uploadInput(n: number): { title: string; content: string } {
  const a = PARAGRAPHS[n % PARAGRAPHS.length]!;
  const b = PARAGRAPHS[(n * 7 + 3) % PARAGRAPHS.length]!;
  return { title: `Report ${n}`, content: `${a} ${b} Reference ${n}: figures for week ${(n % 52) + 1}, batch ${randomBytes(3).toString('hex')}.` };
}

interface LoadFigures {
  rate: number;
  attempted: number;
  accepted: number;
  completed: number;
  failedJobs: number;
  /** Subscribers (accepted uploads) by messages received. */
  messages: { exactlyOne: number; none: number; moreThanOne: number };
  errors: Record<string, number>;
  errorTotal: number;
  latencyMs: { p50: number | null; p95: number | null; p99: number | null; max: number | null };
  uploadMs: { p50: number | null; p99: number | null; max: number | null };
  /** Last upload's start → last jobCompleted, ms. */
  drainMs: number | null;
  /** Completed jobs per second, first upload's start → last jobCompleted. */
  throughput: number;
  /** Latest an upload started after its slot: the load generator keeping up, ms. */
  maxScheduleLagMs: number;
  drainTimedOut: boolean;
  /**
   * Per second of the window, by upload start: uploads started, and the upload and
   * upload → jobCompleted latencies (p50, max). A stall shows as the seconds it falls in.
   */
  timeline: { second: number; started: number; uploadP50: number | null; uploadMax: number | null; p50: number | null; max: number | null }[];
}

interface Pending {
  t0: number;
  uploadMs?: number;
  jobId?: string | undefined;
  messages: number;
  status?: string | undefined;
  at?: number;
  settled: boolean;
}

function timelineOf(records: readonly Pending[], started: number): LoadFigures['timeline'] {
  const seconds = new Map<number, Pending[]>();
  for (const r of records) {
    const second = Math.floor((r.t0 - started) / 1000);
    seconds.set(second, [...(seconds.get(second) ?? []), r]);
  }
  return [...seconds].map(([second, rs]) => {
    const uploads = rs.flatMap((r) => (r.uploadMs === undefined ? [] : [r.uploadMs])).sort((a, b) => a - b);
    const trips = rs.flatMap((r) => (r.at === undefined ? [] : [r.at - r.t0])).sort((a, b) => a - b);
    return { second, started: rs.length, uploadP50: percentile(uploads, 50), uploadMax: uploads.at(-1) ?? null, p50: percentile(trips, 50), max: trips.at(-1) ?? null };
  });
}

const codesOf = (errors: unknown): string[] =>
  Array.isArray(errors) ? errors.map((e) => String((e as { extensions?: { code?: unknown } }).extensions?.code ?? 'NO_CODE')) : [];

/** Open-loop uploads at `rate` for `seconds`, each followed by its jobCompleted subscription. */
async function runLoad(system: RunningSystem, rate: number, seconds: number, onWindow?: { open(): void; close(): void }): Promise<LoadFigures> {
  const clients = await openClients(system.wsUrl, system.token, WS_CLIENTS);
  const agent = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 60_000 });
  const errors = new Map<string, number>();
  const error = (code: string) => errors.set(code, (errors.get(code) ?? 0) + 1);
  const records: Pending[] = [];
  const total = Math.max(1, Math.round(rate * seconds));
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${system.token}` };
  const uploadTimeoutMs = (seconds + DRAIN_TIMEOUT_S) * 1000;
  let maxLag = 0;

  const one = async (n: number, rec: Pending) => {
    try {
      const response = await request(system.httpUrl, {
        method: 'POST',
        headers,
        body: JSON.stringify({ query: UPLOAD, variables: { input: uploadInput(n) } }),
        dispatcher: agent,
        signal: AbortSignal.timeout(uploadTimeoutMs),
      });
      const text = await response.body.text();
      rec.uploadMs = performance.now() - rec.t0;
      let body: { data?: { uploadDocument?: { job?: { id?: string } } | null } | null; errors?: unknown } | undefined;
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        body = undefined;
      }
      for (const code of codesOf(body?.errors)) error(code);
      rec.jobId = body?.data?.uploadDocument?.job?.id;
      if (!rec.jobId && !body?.errors) error(`HTTP_${response.statusCode}`);
    } catch (e) {
      // The client library's own code (ECONNRESET, UND_ERR_HEADERS_TIMEOUT, …) says which limit was hit.
      error((e as Error).name === 'TimeoutError' ? 'UPLOAD_TIMEOUT' : `NETWORK_${String((e as { code?: unknown }).code ?? (e as Error).name)}`);
    }
    if (!rec.jobId) {
      rec.settled = true;
      return;
    }
    const settle = () => {
      rec.settled = true;
    };
    clients[n % clients.length]!.subscribe(
      { query: JOB_COMPLETED, variables: { id: rec.jobId } },
      {
        next: (message) => {
          rec.messages++;
          for (const code of codesOf(message.errors)) error(code);
          if (rec.messages > 1) return;
          rec.at = performance.now();
          rec.status = (message.data as { jobCompleted?: { status?: string } } | null | undefined)?.jobCompleted?.status;
          // No dispose() here: jobCompleted completes by itself after its one message, and
          // graphql-ws's client (6.4) counts a dispose in `next` followed by the server's
          // `complete` twice; once its count of active operations reaches 0 it closes the socket
          // (1000), completing every other subscription on it without a message.
        },
        error: (e) => {
          if (Array.isArray(e)) for (const code of codesOf(e)) error(code);
          else if (typeof (e as { code?: unknown }).code === 'number') error(`SOCKET_CLOSED_${(e as { code: number }).code}`);
          else error('NETWORK');
          settle();
        },
        complete: settle,
      },
    );
  };

  const inFlight: Promise<void>[] = [];
  onWindow?.open();
  const started = performance.now();
  try {
    for (let n = 0; n < total; n++) {
      const due = started + (n * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const rec: Pending = { t0: performance.now(), messages: 0, settled: false };
      maxLag = Math.max(maxLag, rec.t0 - due);
      records.push(rec);
      inFlight.push(one(n, rec));
    }
    const lastStart = records.at(-1)!.t0;
    const deadline = lastStart + DRAIN_TIMEOUT_S * 1000;
    let drainTimedOut = false;
    for (;;) {
      if (records.every((r) => r.settled)) break;
      const now = performance.now();
      if (now > deadline) {
        drainTimedOut = true;
        break;
      }
      // Every job has its message but some stream was never completed by the server: that is
      // counted (NO_COMPLETE), not waited on for the full drain timeout.
      const last = Math.max(...records.map((r) => r.at ?? 0));
      if (records.every((r) => r.settled || r.messages > 0) && now - last > 5_000) break;
      await sleep(20);
    }
    onWindow?.close();
    for (const r of records) {
      if (r.settled) continue;
      error(r.jobId ? (r.messages > 0 ? 'NO_COMPLETE' : 'DRAIN_TIMEOUT') : 'UPLOAD_TIMEOUT');
    }

    const accepted = records.filter((r) => r.jobId);
    const completed = accepted.filter((r) => r.status === 'COMPLETED');
    const latencies = completed.map((r) => r.at! - r.t0).sort((a, b) => a - b);
    const uploads = accepted.map((r) => r.uploadMs!).sort((a, b) => a - b);
    const lastMessage = Math.max(...accepted.map((r) => r.at ?? Number.NEGATIVE_INFINITY));
    return {
      rate,
      attempted: total,
      accepted: accepted.length,
      completed: completed.length,
      failedJobs: accepted.filter((r) => r.status === 'FAILED').length,
      messages: {
        exactlyOne: accepted.filter((r) => r.messages === 1).length,
        none: accepted.filter((r) => r.messages === 0).length,
        moreThanOne: accepted.filter((r) => r.messages > 1).length,
      },
      errors: Object.fromEntries([...errors].sort()),
      errorTotal: [...errors.values()].reduce((s, v) => s + v, 0),
      latencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99), max: latencies.at(-1) ?? null },
      uploadMs: { p50: percentile(uploads, 50), p99: percentile(uploads, 99), max: uploads.at(-1) ?? null },
      drainMs: Number.isFinite(lastMessage) ? lastMessage - lastStart : null,
      throughput: Number.isFinite(lastMessage) && lastMessage > started ? (completed.length * 1000) / (lastMessage - started) : 0,
      maxScheduleLagMs: maxLag,
      drainTimedOut,
      timeline: timelineOf(records, started),
    };
  } finally {
    await disposeAll(clients);
    // Uploads still in flight after a drain timeout are cut off here.
    await within(agent.destroy(), 5_000, 'agent destroy').catch(() => {});
    await within(Promise.allSettled(inFlight), 10_000, 'uploads to settle').catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Runs


interface RunResult extends LoadFigures {
  tree: Tree['name'];
  mode: Mode;
  /** Which of the rate's BENCH_ROUNDS rounds (from 0). */
  round: number;
  /** The run's RabbitMQ namespace; its databases are `tributary_<namespace>_<service>`. */
  namespace: string;
  pass: boolean;
  /** "deadlock detected" lines PostgreSQL logged for this run's databases (null: not checked). */
  deadlocks: number | null;
  cpu: CpuFigures;
  /** CPU ms per completed job by group, and their total (the load generator not included). */
  cpuPerJobMs: Record<string, number | null>;
  loadgenPerJobMs: number | null;
  /** CPU ms per second by group in the quiet BENCH_IDLE_MS after the warm-up (one sample of 10 ms ticks). */
  idleCpuMsPerS: Record<string, number>;
  /** Warn/error log lines per process, by `level msg`. */
  logs: Record<string, Record<string, number>>;
  exits: string[];
  cleanupProblems: string[];
}

interface Skipped {
  tree: Tree['name'];
  mode: Mode;
  rate: number;
  round: number;
  notRun: string;
}

function passes(r: LoadFigures): boolean {
  return r.completed === r.attempted && r.errorTotal === 0 && r.messages.exactlyOne === r.accepted && r.latencyMs.p99 !== null && r.latencyMs.p99 <= CAPACITY_P99_MS;
}

async function runOne(tree: Tree, mode: Mode, rate: number, round: number): Promise<RunResult> {
  const system = await startSystem(tree, mode, { profile: PROFILE, startTimeoutS: START_TIMEOUT_S });
  let figures: LoadFigures | undefined;
  let cpu: CpuFigures | undefined;
  let idle: CpuFigures | undefined;
  const cleanupProblems: string[] = [];
  try {
    if (WARMUP > 0) await runLoad(system, 10, WARMUP / 10);
    // What the system burns with nothing to do (pollers, timers) is a floor under CPU per job
    // that weighs most at low rates.
    const idleFrom = snapshot(system.namespace);
    await sleep(IDLE_MS);
    idle = cpuBetween(idleFrom, snapshot(system.namespace), system.pids);
    let before: CpuSnapshot | undefined;
    figures = await runLoad(system, rate, SECONDS, {
      open: () => {
        before = snapshot(system.namespace);
      },
      close: () => {
        cpu = cpuBetween(before!, snapshot(system.namespace), system.pids);
      },
    });
  } finally {
    cleanupProblems.push(...(await system.stop()));
  }
  const jobs = figures.completed;
  const perJob = (ms: number) => (jobs > 0 ? ms / jobs : null);
  const cpuPerJobMs: Record<string, number | null> = {};
  for (const [name, ms] of Object.entries(cpu!.ms)) cpuPerJobMs[name] = perJob(ms);
  cpuPerJobMs.total = perJob(Object.values(cpu!.ms).reduce((s, v) => s + v, 0));
  const idleCpuMsPerS: Record<string, number> = {};
  if (idle && idle.windowMs > 0) for (const [name, ms] of Object.entries(idle.ms)) idleCpuMsPerS[name] = (ms * 1000) / idle.windowMs;
  const logs: Record<string, Record<string, number>> = {};
  for (const [name, entry] of system.log) if (entry.counts.size > 0) logs[name] = Object.fromEntries(entry.counts);
  return {
    tree: tree.name,
    mode,
    round,
    namespace: system.namespace,
    ...figures,
    pass: passes(figures) && system.exits.length === 0,
    deadlocks: null,
    cpu: cpu!,
    cpuPerJobMs,
    loadgenPerJobMs: perJob(cpu!.loadgenMs),
    idleCpuMsPerS,
    logs,
    exits: system.exits,
    cleanupProblems,
  };
}

// ---------------------------------------------------------------------------------------------
// Baseline worktree and the PostgreSQL log

function git(args: string[], cwd = ROOT): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function changedFiles(dir: string): number {
  return git(['status', '--porcelain'], dir).split('\n').filter(Boolean).length;
}

function makeBaseline(ref: string): Tree {
  const commit = git(['rev-parse', '--verify', `${ref}^{commit}`]);
  const parent = mkdtempSync(join(tmpdir(), 'tributary-bench-baseline-'));
  const dir = join(parent, 'tree');
  live.worktree = { dir, parent };
  console.error(`baseline: git worktree add --detach ${dir} ${commit.slice(0, 12)}`);
  git(['worktree', 'add', '--detach', dir, commit]);
  const install = (args: string[]) => execFileSync('pnpm', ['install', ...args], { cwd: dir, timeout: 600_000, stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    install(['--frozen-lockfile', '--offline']);
  } catch {
    console.error('baseline: offline install failed, installing from the registry');
    install(['--frozen-lockfile']);
  }
  return { name: 'baseline', dir, commit, changedFiles: 0 };
}

function removeBaseline(): string[] {
  const worktree = live.worktree;
  if (!worktree) return [];
  const problems: string[] = [];
  try {
    git(['worktree', 'remove', '--force', worktree.dir]);
  } catch (error) {
    problems.push(`git worktree remove: ${(error as Error).message}`);
    try {
      git(['worktree', 'prune']);
    } catch {
      // reported above
    }
  }
  rmSync(worktree.parent, { recursive: true, force: true });
  live.worktree = undefined;
  return problems;
}

function fileSize(path: string): number | null {
  try {
    return statSync(path).size;
  } catch {
    return null;
  }
}

/** "deadlock detected" lines PostgreSQL appended to its log since `from` bytes (null: unreadable). */
function deadlocksSince(path: string, from: number): string[] | null {
  const size = fileSize(path);
  if (size === null) return null;
  // A log rotated during the run starts again from zero.
  const start = size < from ? 0 : from;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const buffer = Buffer.alloc(size - start);
    readSync(fd, buffer, 0, buffer.length, start);
    return buffer
      .toString('utf8')
      .split('\n')
      .filter((line) => line.includes('deadlock detected'));
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const fmt = (v: number | null | undefined, digits = 0) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(digits));
const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || b === 0 ? null : a / b);

function table(label: string, rows: (RunResult | Skipped)[], capacity: Capacity): string {
  const groups = rows.find((r): r is RunResult => 'cpuPerJobMs' in r)?.cpuPerJobMs;
  const cpuNames = groups ? Object.keys(groups) : [];
  const short: Record<string, string> = { gateway: 'gw', documents: 'docs', jobs: 'jobs', analysis: 'anlys', insights: 'insig', webhooks: 'hooks', system: 'system', postgres: 'pg', rabbitmq: 'mq', total: 'total' };
  const head =
    ['rate', 'rnd', 'sent', 'acc', 'done', '1msg', '0msg', '>1', 'errors', 'p50', 'p95', 'p99', 'max', 'drain', 'jobs/s'].map((h, i) => (i === 8 ? h.padEnd(22) : h.padStart(i === 1 ? 3 : i < 8 ? 5 : 6))).join(' ') +
    ' │ CPU ms/job ' +
    cpuNames.map((n) => (short[n] ?? n).padStart(6)).join('') +
    ' │ ' +
    ['lgen', 'bg%', 'dlock'].map((h) => h.padStart(5)).join(' ') +
    '  ok';
  const lines = [`${label}  — capacity ${capacity.rate === null ? 'none (no rate passed)' : `${capacity.bounded ? '' : '≥ '}${capacity.rate}/s`}`, head];
  for (const r of rows) {
    if (!('cpuPerJobMs' in r)) {
      lines.push(`${String(r.rate).padStart(5)} ${String(r.round + 1).padStart(3)}  not run (${r.notRun.split('\n')[0]!.slice(0, 200)})`);
      continue;
    }
    const errors = Object.entries(r.errors).map(([code, n]) => `${code}:${n}`).join(',') || '0';
    const cells = [String(r.rate).padStart(5), String(r.round + 1).padStart(3)];
    cells.push(...[r.attempted, r.accepted, r.completed, r.messages.exactlyOne, r.messages.none, r.messages.moreThanOne].map((v) => String(v).padStart(5)));
    cells.push(errors.padEnd(22));
    cells.push(...[r.latencyMs.p50, r.latencyMs.p95, r.latencyMs.p99, r.latencyMs.max, r.drainMs].map((v) => fmt(v).padStart(6)));
    cells.push(fmt(r.throughput, 1).padStart(6));
    const cpu = cpuNames.map((n) => fmt(r.cpuPerJobMs[n], 1).padStart(6)).join('');
    const bg = (r.cpu.otherMs / r.cpu.windowMs) * 100;
    lines.push(`${cells.join(' ')} │            ${cpu} │ ${fmt(r.loadgenPerJobMs, 1).padStart(5)} ${fmt(bg).padStart(5)} ${fmt(r.deadlocks).padStart(5)}  ${r.pass ? 'yes' : 'NO'}${r.exits.length ? ` (${r.exits.length} process exits)` : ''}`);
  }
  return lines.join('\n');
}

interface Capacity {
  rate: number | null;
  /** False when the highest rate run passed: the capacity is at least that. */
  bounded: boolean;
}

/** The highest rate at which every round passed. */
function capacityOf(rows: (RunResult | Skipped)[]): Capacity {
  const run = rows.filter((r): r is RunResult => 'cpuPerJobMs' in r);
  const rates = [...new Set(run.map((r) => r.rate))];
  const passed = rates.filter((rate) => run.every((r) => r.rate !== rate || r.pass));
  const best = passed.length > 0 ? Math.max(...passed) : null;
  return { rate: best, bounded: run.some((r) => !r.pass && (best === null || r.rate > best)) };
}

type Summary = ReturnType<typeof ratioSummary>;

/** One side of a comparison: a tree in a mode. */
interface Side {
  tree: Tree['name'];
  mode: Mode;
}

/** `of`'s figures over `to`'s, round by round at each rate (the rounds where both ran), and their median and spread. */
interface Comparison {
  of: string;
  to: string;
  byRate: {
    rate: number;
    rounds: { round: number; p50: number | null; p99: number | null; cpuPerJob: number | null }[];
    p50: Summary | null;
    p99: Summary | null;
    cpuPerJob: Summary | null;
  }[];
}

function compare(results: readonly (RunResult | Skipped)[], of: Side, to: Side): Comparison {
  const find = (side: Side, rate: number, round: number) =>
    results.find((r): r is RunResult => r.tree === side.tree && r.mode === side.mode && r.rate === rate && r.round === round && 'cpuPerJobMs' in r);
  const summary = (values: (number | null)[]) => {
    const present = values.filter((v): v is number => v !== null && Number.isFinite(v));
    return present.length > 0 ? ratioSummary(present) : null;
  };
  return {
    of: `${of.tree}/${of.mode}`,
    to: `${to.tree}/${to.mode}`,
    byRate: RATES.map((rate) => {
      const rounds = Array.from({ length: ROUNDS }, (_, round) => ({ round, a: find(of, rate, round), b: find(to, rate, round) }))
        .filter(({ a, b }) => a && b)
        .map(({ round, a, b }) => ({
          round,
          p50: ratio(a!.latencyMs.p50, b!.latencyMs.p50),
          p99: ratio(a!.latencyMs.p99, b!.latencyMs.p99),
          cpuPerJob: ratio(a!.cpuPerJobMs.total, b!.cpuPerJobMs.total),
        }));
      return { rate, rounds, p50: summary(rounds.map((r) => r.p50)), p99: summary(rounds.map((r) => r.p99)), cpuPerJob: summary(rounds.map((r) => r.cpuPerJob)) };
    }),
  };
}

const spread = (s: Summary | null, digits = 2) => (s ? `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : '—');

function printComparison(c: Comparison, results: readonly (RunResult | Skipped)[]): void {
  const [ofTree, ofMode] = c.of.split('/') as [Tree['name'], Mode];
  const [toTree, toMode] = c.to.split('/') as [Tree['name'], Mode];
  const get = (tree: Tree['name'], mode: Mode, rate: number, round: number) =>
    results.find((r): r is RunResult => r.tree === tree && r.mode === mode && r.rate === rate && r.round === round && 'cpuPerJobMs' in r);
  console.log(`\n${c.of} ÷ ${c.to}, round by round (p50 ms; CPU ms per job, every process counted):`);
  console.log(` rate rnd │ p50 ${c.to.split('/')[1]!.padStart(8)} ${c.of.split('/')[1]!.padStart(9)}  ratio │ CPU/job ${c.to.split('/')[1]!.padStart(8)} ${c.of.split('/')[1]!.padStart(9)}  ratio`);
  for (const row of c.byRate) {
    for (const r of row.rounds) {
      const a = get(ofTree, ofMode, row.rate, r.round)!;
      const b = get(toTree, toMode, row.rate, r.round)!;
      console.log(
        `${String(row.rate).padStart(5)} ${String(r.round + 1).padStart(3)} │ ${fmt(b.latencyMs.p50).padStart(12)} ${fmt(a.latencyMs.p50).padStart(9)} ${fmt(r.p50, 2).padStart(6)} │ ` +
          `${fmt(b.cpuPerJobMs.total, 1).padStart(16)} ${fmt(a.cpuPerJobMs.total, 1).padStart(9)} ${fmt(r.cpuPerJob, 2).padStart(6)}`,
      );
    }
    if (row.rounds.length > 0) {
      console.log(`${String(row.rate).padStart(5)}/s over ${row.rounds.length} round(s): p50 ratio ${spread(row.p50)}, CPU/job ratio ${spread(row.cpuPerJob)}, p99 ratio ${spread(row.p99)} — median (min–max)`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Main

const RATES = [...new Set(listEnv('BENCH_RATES', '10,20,30,40,60,80,100').map(Number))].sort((a, b) => a - b);
const SECONDS = numberEnv('BENCH_SECONDS', 15, 0.1);
const CAPACITY_P99_MS = numberEnv('BENCH_CAPACITY_P99_MS', 1000, 1);
const FIND_CAPACITY = flagEnv('BENCH_FIND_CAPACITY', true);
const DRAIN_TIMEOUT_S = numberEnv('BENCH_DRAIN_TIMEOUT_S', 300, 1);
const WARMUP = Math.round(numberEnv('BENCH_WARMUP', 20));
const IDLE_MS = numberEnv('BENCH_IDLE_MS', 1500);
const WS_CLIENTS = Math.max(1, Math.round(numberEnv('BENCH_WS_CLIENTS', 8, 1)));
const START_TIMEOUT_S = numberEnv('BENCH_START_TIMEOUT_S', 90, 1);
const TREES = listEnv('BENCH_TREES', 'both').flatMap((t) => (t === 'both' ? ['current', 'baseline'] : [t]));
const BASELINE = process.env.BENCH_BASELINE || DEFAULT_BASELINE;
const MODES = listEnv('BENCH_MODES', 'processes');
/** The floor against the system: what a ratio of theirs is measured on. */
const FLOOR: Side = { tree: 'current', mode: 'floor' };
const SYSTEM: Side = { tree: 'current', mode: 'processes' };
const COMPARES_FLOOR = MODES.includes('floor') && MODES.includes('processes') && TREES.includes('current');
/** Rounds per rate: 3 by default when the floor and the system are compared, else 1. */
const ROUNDS = Math.max(1, Math.round(numberEnv('BENCH_ROUNDS', COMPARES_FLOOR ? 3 : 1, 1)));
const PG_LOG_CHECK = flagEnv('BENCH_PG_LOG_CHECK', true);
const PG_LOG = process.env.BENCH_PG_LOG || '/var/log/postgresql/postgresql-15-main.log';
/** Processes of the current tree (`gateway`, `jobs`, …, or `all`) run under `--cpu-prof`, profiles in bench/results/profiles/. */
const PROFILE = new Set(listEnv('BENCH_PROFILE', ''));

async function cleanupAll(): Promise<string[]> {
  return [...(await cleanupLive()), ...removeBaseline()];
}

async function main(): Promise<void> {
  for (const rate of RATES) if (!(rate > 0)) throw new Error(`BENCH_RATES: ${rate} is not a positive rate`);
  for (const tree of TREES) if (tree !== 'current' && tree !== 'baseline') throw new Error(`BENCH_TREES: unknown tree ${tree}`);
  for (const mode of MODES) if (!['processes', 'embedded', 'embedded-real', 'floor'].includes(mode)) throw new Error(`BENCH_MODES: unknown mode ${mode}`);
  const pgLogStart = PG_LOG_CHECK ? fileSize(PG_LOG) : null;
  const startedAt = new Date();
  const trees: Tree[] = [];
  const results: (RunResult | Skipped)[] = [];
  let failure: string | undefined;
  const signal = onInterrupt(cleanupAll);
  const write = (pgLog: PgLogReport) => {
    const combos = combosOf(trees);
    const capacity: Record<string, Capacity> = {};
    for (const { tree, mode } of combos) capacity[`${tree.name}/${mode}`] = capacityOf(results.filter((r) => r.tree === tree.name && r.mode === mode));
    const current = capacity['current/processes'];
    const baseline = capacity['baseline/processes'];
    const ran = (side: Side) => combos.some((c) => c.tree.name === side.tree && c.mode === side.mode);
    const comparisons = {
      /** The system over the floor: how much slower, and how much more CPU, our layers make a job. */
      systemToFloor: ran(SYSTEM) && ran(FLOOR) ? compare(results, SYSTEM, FLOOR) : null,
      currentToBaseline: ran(SYSTEM) && ran({ tree: 'baseline', mode: 'processes' }) ? compare(results, SYSTEM, { tree: 'baseline', mode: 'processes' }) : null,
    };
    const file = writeResult('deployed', {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      ...(failure ? { failure } : {}),
      trees: Object.fromEntries(trees.map((t) => [t.name, { commit: t.commit, changedFiles: t.changedFiles, dir: t.name === 'current' ? t.dir : '(temporary worktree)' }])),
      settings: {
        BENCH_RATES: RATES,
        BENCH_SECONDS: SECONDS,
        BENCH_ROUNDS: ROUNDS,
        BENCH_CAPACITY_P99_MS: CAPACITY_P99_MS,
        BENCH_FIND_CAPACITY: FIND_CAPACITY,
        BENCH_DRAIN_TIMEOUT_S: DRAIN_TIMEOUT_S,
        BENCH_WARMUP: WARMUP,
        BENCH_IDLE_MS: IDLE_MS,
        BENCH_WS_CLIENTS: WS_CLIENTS,
        BENCH_TREES: TREES,
        BENCH_BASELINE: BASELINE,
        BENCH_MODES: MODES,
        BENCH_FLOOR_DISPATCH: process.env.BENCH_FLOOR_DISPATCH ?? 'relay',
        BENCH_PG_LOG_CHECK: PG_LOG_CHECK,
        DATABASE_URL,
        AMQP_URL,
      },
      method:
        'fresh system (databases, namespace, processes) per tree, mode, rate and round; warm-up uploads at 10/s then idle before each window; ' +
        'per rate, BENCH_ROUNDS rounds of every tree and mode, the order reversed each round (A B, B A, A B, …); ratios taken within a round, then their median and range',
      capacity,
      ratio: {
        capacity: current && baseline ? ratio(current.rate, baseline.rate) : null,
        ...comparisons,
      },
      pgLog,
      results,
    });
    return { capacity, comparisons, file };
  };

  try {
    if (TREES.includes('current')) trees.push({ name: 'current', dir: ROOT, commit: git(['rev-parse', 'HEAD']), changedFiles: changedFiles(ROOT) });
    if (TREES.includes('baseline') && BASELINE !== 'none') trees.push(makeBaseline(BASELINE));
    const combos = combosOf(trees);
    if (combos.length === 0) throw new Error('nothing to run: check BENCH_TREES, BENCH_MODES and BENCH_BASELINE');
    console.log(
      `deployed benchmark: rates ${RATES.join(', ')}/s for ${SECONDS} s each, ${ROUNDS} round(s) per rate; upload → jobCompleted through the gateway; ` +
        `${combos.map((c) => `${c.tree.name}/${c.mode}`).join(', ')}; capacity: p99 ≤ ${CAPACITY_P99_MS} ms in every round, nothing lost` +
        (FIND_CAPACITY ? '; stepping up until the first miss' : ''),
    );
    for (const t of trees) console.log(`  ${t.name.padEnd(8)} ${t.commit.slice(0, 12)}${t.changedFiles ? ` + ${t.changedFiles} uncommitted files` : ''}  ${t.name === 'current' ? t.dir : ''}`);
    const stopped = new Set<string>();
    let turn = 0;
    for (const rate of RATES) {
      const missed = new Set<string>();
      for (let round = 0; round < ROUNDS; round++, turn++) {
        // The order reversed every round (A B, B A, A B, …; and on from rate to rate), so a shared
        // machine's drift falls on every tree and mode alike.
        const ordered = turn % 2 === 0 ? combos : [...combos].reverse();
        for (const { tree, mode } of ordered) {
          const key = `${tree.name}/${mode}`;
          if (signal.interrupted) break;
          if (stopped.has(key)) {
            results.push({ tree: tree.name, mode, rate, round, notRun: 'a lower rate missed, or a run failed' });
            continue;
          }
          const label = `${key}: ${rate}/s${ROUNDS > 1 ? `, round ${round + 1}/${ROUNDS}` : ''}`;
          console.error(`${label} for ${SECONDS} s …`);
          let r: RunResult;
          try {
            r = await runOne(tree, mode, rate, round);
          } catch (error) {
            // One tree failing to start (a half-edited working copy, say) still lets the other run.
            const message = (error as Error).message.slice(0, 2000);
            console.error(`${label} failed: ${message}`);
            results.push({ tree: tree.name, mode, rate, round, notRun: `failed: ${message}` });
            stopped.add(key);
            continue;
          }
          results.push(r);
          console.error(
            `${label}  done ${r.completed}/${r.attempted}  p50 ${fmt(r.latencyMs.p50)} p99 ${fmt(r.latencyMs.p99)} ms  drain ${fmt(r.drainMs)} ms  ` +
              `CPU/job ${fmt(r.cpuPerJobMs.total, 1)} ms (idle ${fmt(Object.values(r.idleCpuMsPerS).reduce((a, b) => a + b, 0))} ms/s)  errors ${r.errorTotal}${r.pass ? '' : '  (missed)'}`,
          );
          for (const exit of r.exits) console.error(`  ${exit}`);
          for (const problem of r.cleanupProblems) console.error(`  clean-up: ${problem}`);
          if (!r.pass) missed.add(key);
          await sleep(IDLE_MS);
        }
      }
      // Every round of a rate runs, so its ratios have all their rounds; a miss stops the higher rates.
      if (FIND_CAPACITY) for (const key of missed) stopped.add(key);
    }
  } catch (error) {
    failure = (error as Error).stack ?? String(error);
    throw error;
  } finally {
    const problems = await cleanupAll();
    if (problems.length > 0) console.error(`clean-up problems:\n${problems.join('\n')}`);
    if (!signal.interrupted) {
      const pgLog = checkPgLog(pgLogStart, results);
      const { capacity, comparisons, file } = write(pgLog);
      console.log();
      for (const { tree, mode } of combosOf(trees)) {
        const key = `${tree.name}/${mode}`;
        console.log(table(key, results.filter((r) => r.tree === tree.name && r.mode === mode), capacity[key]!));
        console.log();
      }
      console.log(
        'columns: rnd = round; sent/acc/done = uploads attempted / accepted / completed; 1msg/0msg/>1 = subscribers by messages received; latencies ms, upload start → jobCompleted;\n' +
          'drain = last upload start → last jobCompleted, ms; CPU ms per completed job (pg = the run\'s backends + PostgreSQL\'s shared processes, mq = the broker); lgen = load generator; bg% = machine CPU none of these used, % of one core;\n' +
          'dlock = "deadlock detected" lines PostgreSQL logged for the run\'s databases',
      );
      if (capacity['current/processes'] && capacity['baseline/processes']) {
        const c = capacity['current/processes'];
        const b = capacity['baseline/processes'];
        console.log(`\ncapacity current/baseline: ${c.rate ?? 0}/s${c.bounded ? '' : '+'} vs ${b.rate ?? 0}/s${b.bounded ? '' : '+'} = ${fmt(ratio(c.rate, b.rate), 2)}×`);
      }
      if (comparisons.currentToBaseline) printComparison(comparisons.currentToBaseline, results);
      if (comparisons.systemToFloor) printComparison(comparisons.systemToFloor, results);
      if (pgLog.checked) {
        console.log(
          pgLog.count === null
            ? `\nPostgreSQL log ${pgLog.path} not readable: deadlocks not checked`
            : `\nPostgreSQL log (${pgLog.path}): ${pgLog.count} "deadlock detected" line(s) during the run, ${pgLog.ours} in this benchmark's databases`,
        );
      }
      console.log(`\nwrote ${file}`);
    }
  }
}

interface PgLogReport {
  checked: boolean;
  path: string;
  /** Every "deadlock detected" line the server logged during the run, from any client. */
  count: number | null;
  /** Those naming one of this benchmark's databases (the log line prefix carries `user@database`). */
  ours: number | null;
  lines: string[];
}

/** Counts the run's deadlocks, overall and per benchmark run (into `results`). */
function checkPgLog(start: number | null, results: readonly (RunResult | Skipped)[]): PgLogReport {
  if (!PG_LOG_CHECK) return { checked: false, path: PG_LOG, count: null, ours: null, lines: [] };
  const lines = start === null ? null : deadlocksSince(PG_LOG, start);
  if (lines === null) return { checked: true, path: PG_LOG, count: null, ours: null, lines: [] };
  let ours = 0;
  for (const r of results) {
    if (!('cpuPerJobMs' in r)) continue;
    r.deadlocks = lines.filter((line) => line.includes(`tributary_${r.namespace}_`)).length;
    ours += r.deadlocks;
  }
  return { checked: true, path: PG_LOG, count: lines.length, ours, lines: lines.slice(0, 20) };
}

function combosOf(trees: readonly Tree[]): { tree: Tree; mode: Mode }[] {
  const combos: { tree: Tree; mode: Mode }[] = [];
  for (const mode of MODES as Mode[]) for (const tree of trees) if (mode === 'processes' || tree.name === 'current') combos.push({ tree, mode });
  return combos;
}

await runBenchmark(main, cleanupAll);
