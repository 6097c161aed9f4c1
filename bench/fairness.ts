/**
 * `pnpm bench:fairness`: whether one tenant's backlog makes the others wait (issue 26). The
 * repo's OpenAI-compatible test server plays a provider whose every chat completion takes L ms
 * and which refuses any call above C at once (429); the analysis process runs C call slots
 * (ANALYSIS_CONCURRENCY = C), so no deployment finishes more than C / L documents per second.
 * Three scenarios, all through the gateway, each tenant with a token of its own and its
 * `jobCompleted` subscriptions on its own graphql-ws sockets:
 *   - `noisy`: tenant A uploads BENCH_BULK documents as fast as the gateway takes them
 *     (BENCH_UPLOAD_CONCURRENCY uploads in flight); BENCH_DELAY_MS after A's first upload
 *     started, tenant B uploads one. B's wait = its upload's start → its jobCompleted message;
 *     A's drain = A's documents/s from its first completion to its last ((n − 1) / (last −
 *     first)), next to the limit C / L.
 *   - `tenants`: BENCH_TENANTS tenants upload BENCH_TENANT_DOCS each, all at once (their first
 *     uploads sent in turn); in every BENCH_WINDOW_S window from the first completion until the
 *     first tenant has all its documents completed, each tenant's share of the completions (a
 *     last window shorter than BENCH_WINDOW_S is reported apart and not counted in min/max).
 *   - `priority`: tenant A uploads BENCH_BULK documents at LOW, and BENCH_DELAY_MS after its first
 *     upload started, one at HIGH; the HIGH's wait (upload → jobCompleted message). The run ends
 *     once the HIGH has completed and every upload has been answered: the LOW backlog is not
 *     waited for.
 * Two clocks: a wait ends when the client receives the jobCompleted message (what a user sees);
 * drains and shares count each completion at its Job.completedAt (when analysis settled it, as
 * the job records it, on this machine's clock), because under an upload storm the messages
 * reach the client seconds late and in bursts, which would measure delivery instead of the
 * order of the work. Each is also reported on the other clock (`completedMs`,
 * `aDrainReceived`, `sharesReceived`). For each waiting document (B's, the HIGH one) the JSON
 * also has when the test server received its call, how many other calls it received between the
 * upload and that one, and when `job(id:)`, asked every BENCH_POLL_MS meanwhile, first answered
 * that the job had ended (the job view's lag, apart from the message's).
 * Every scenario runs with ANALYSIS_ORDER=fair (the scheduler) and ANALYSIS_ORDER=fifo (arrival
 * order only, the same work table: the baseline), each on a fresh system and test server, over
 * BENCH_ROUNDS rounds, the two orders' turn reversed each round (fair, fifo; fifo, fair; …), so a
 * shared machine's drift falls on both alike; fifo/fair and fair/fifo ratios are taken within a
 * round, and reported per round and as their median and range. Before each measured window,
 * BENCH_WARMUP documents of a tenant of their own are analysed (JIT, pools; not counted). A
 * benchmark, not a test: it prints issue 26's done-when thresholds next to the figures and
 * asserts nothing.
 *
 * Modes (BENCH_MODES): `processes` (the default: the gateway and the five subgraphs as OS
 * processes, started as their start scripts start them, on PostgreSQL and RabbitMQ, one
 * analysis process; about 15 minutes with the defaults) and `embedded` (`pnpm dev`'s one
 * process, PGlite and the in-memory bus; as long again), e.g. BENCH_MODES=processes,embedded.
 *
 * Env: BENCH_MODES ("processes"), BENCH_SCENARIOS ("noisy,tenants,priority"), BENCH_ROUNDS (3),
 * BENCH_BULK (1000), BENCH_TENANTS (3), BENCH_TENANT_DOCS (300), BENCH_DELAY_MS (2000),
 * BENCH_WINDOW_S (5), BENCH_LATENCY_MS (L, 2000), BENCH_CAPACITY (C, 64), BENCH_CONCURRENCY
 * (ANALYSIS_CONCURRENCY, default C), BENCH_TENANT_CONCURRENCY (ANALYSIS_TENANT_CONCURRENCY;
 * default unset: no cap), BENCH_UPLOAD_CONCURRENCY (uploads in flight per tenant, 64),
 * BENCH_WS_CLIENTS (graphql-ws sockets per tenant, 4), BENCH_WARMUP (20; 0 for none),
 * BENCH_POLL_MS (how often a waiting document's `job(id:)` is asked, 100),
 * BENCH_TIMEOUT_S (per run, 600), BENCH_RESULT_NAME (bench/results.ts), DATABASE_URL, AMQP_URL
 * (defaults: the local services). Writes bench/results/fairness.json (bench/results.ts: with
 * the commit, a dirty flag, Node's version, the CPU count and the date).
 */
import { startOpenAITestServer, type OpenAITestServer } from '@tributary/ai/testing';
import type { Client } from 'graphql-ws';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'undici';
import { median, onInterrupt, ratioSummary, writeResult } from './results.ts';
import { cleanupLive, disposeAll, openClients, ROOT, runBenchmark, sleep, startSystem, within, type Mode, type RunningSystem } from './system.ts';

const number = (name: string, fallback: number, min = 1) => {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min}, got ${JSON.stringify(raw)}`);
  return value;
};
const list = (name: string, fallback: string) =>
  (process.env[name] || fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const SCENARIOS = ['noisy', 'tenants', 'priority'] as const;
type Scenario = (typeof SCENARIOS)[number];
const ORDERS = ['fair', 'fifo'] as const;
type Order = (typeof ORDERS)[number];

const MODES = list('BENCH_MODES', 'processes') as Mode[];
for (const mode of MODES) if (mode !== 'processes' && mode !== 'embedded') throw new Error(`BENCH_MODES: unknown mode ${mode} (processes, embedded)`);
const RUN_SCENARIOS = list('BENCH_SCENARIOS', SCENARIOS.join(',')) as Scenario[];
for (const s of RUN_SCENARIOS) if (!SCENARIOS.includes(s)) throw new Error(`BENCH_SCENARIOS: unknown scenario ${s} (${SCENARIOS.join(', ')})`);
const ROUNDS = Math.round(number('BENCH_ROUNDS', 3));
const BULK = Math.round(number('BENCH_BULK', 1000));
const TENANTS = Math.round(number('BENCH_TENANTS', 3, 2));
const TENANT_DOCS = Math.round(number('BENCH_TENANT_DOCS', 300));
const DELAY_MS = number('BENCH_DELAY_MS', 2000, 0);
const WINDOW_S = number('BENCH_WINDOW_S', 5);
const LATENCY_MS = number('BENCH_LATENCY_MS', 2000);
const CAPACITY = Math.round(number('BENCH_CAPACITY', 64));
const CONCURRENCY = Math.round(number('BENCH_CONCURRENCY', CAPACITY));
const TENANT_CONCURRENCY = process.env.BENCH_TENANT_CONCURRENCY ? Math.round(number('BENCH_TENANT_CONCURRENCY', 0, 0)) : undefined;
const UPLOAD_CONCURRENCY = Math.round(number('BENCH_UPLOAD_CONCURRENCY', 64));
const WS_CLIENTS = Math.round(number('BENCH_WS_CLIENTS', 4));
const WARMUP = Math.round(number('BENCH_WARMUP', 20, 0));
const TIMEOUT_S = number('BENCH_TIMEOUT_S', 600);
const POLL_MS = number('BENCH_POLL_MS', 100);
const API_KEY = 'sk-bench';
/** Documents per second no deployment of these settings can exceed: C calls per L. */
const LIMIT = CAPACITY / (LATENCY_MS / 1000);
/** Issue 26's done-when thresholds. */
const THRESHOLD = { waitMs: 3 * LATENCY_MS, drainOfFifo: 0.9, share: { min: 0.25, max: 0.42 } };

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const JOB_STATUS = 'query($id: ID!) { job(id: $id) { status } }';
const JOB_COMPLETED = 'subscription($id: ID!) { jobCompleted(jobId: $id) { status completedAt error { code } } }';

type Priority = 'HIGH' | 'NORMAL' | 'LOW';

/** A distinct text per document (the response cache must answer none), with a marker to find its call at the test server. */
const text = (marker: string) =>
  `Report ${marker} (${randomBytes(6).toString('hex')}): revenue grew in every region while support costs fell. ` +
  'The team shipped the new onboarding flow, and churn among new customers dropped for the third quarter running.';

// ---------------------------------------------------------------------------------------------
// Tenants, uploads and completions

interface Tenant {
  name: string;
  token: string;
  clients: Client[];
  errors: Record<string, number>;
}

/** One upload as the benchmark saw it, ms from the run's start. */
interface Doc {
  tenant: string;
  marker: string;
  uploadStart: number;
  /** Its upload's start, ms since the epoch (the test server's clock). */
  uploadStartEpoch: number;
  uploadEnd?: number;
  jobId?: string | undefined;
  /** When its jobCompleted message arrived. */
  completed?: number;
  /** Its Job.completedAt (when analysis settled it, as the job records it), on the same clock. */
  completedAt?: number;
  /** A probe's: when `job(id:)`, asked every BENCH_POLL_MS, first answered a terminal status. */
  viewed?: number;
  status?: string;
}

const count = (errors: Record<string, number>, code: string) => void (errors[code] = (errors[code] ?? 0) + 1);

async function openTenant(system: RunningSystem, name: string): Promise<Tenant> {
  const token = await system.tokenFor(name);
  return { name, token, clients: await openClients(system.wsUrl, token, WS_CLIENTS), errors: {} };
}

/** The uploads of one measured window (or the warm-up), timed from its start. */
class Load {
  readonly t0 = performance.now();
  readonly t0Epoch = Date.now();
  readonly docs: Doc[] = [];
  private serial = 0;

  constructor(
    private readonly system: RunningSystem,
    private readonly dispatcher: Agent,
  ) {}

  now(): number {
    return performance.now() - this.t0;
  }

  /**
   * Upload one document for `tenant`; with `track`, subscribe to its jobCompleted once accepted
   * (and a `probe` asks `job(id:)` meanwhile too, to tell the job view's lag from the message's).
   * `answered`: the upload has its answer; `settled`: that, and a tracked job has ended.
   */
  upload(tenant: Tenant, priority: Priority, track: boolean, marker = `${tenant.name}-${this.serial++}`, probe = false): { doc: Doc; answered: Promise<void>; settled: Promise<void> } {
    const doc: Doc = { tenant: tenant.name, marker, uploadStart: this.now(), uploadStartEpoch: Date.now() };
    this.docs.push(doc);
    const answered = (async () => {
      try {
        const response = await request(this.system.httpUrl, {
          method: 'POST',
          dispatcher: this.dispatcher,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.token}` },
          body: JSON.stringify({ query: UPLOAD, variables: { input: { title: `Report ${marker}`, content: text(marker), priority } } }),
          signal: AbortSignal.timeout(TIMEOUT_S * 1000),
        });
        const body = (await response.body.json()) as { data?: { uploadDocument?: { job?: { id?: string } } }; errors?: { extensions?: { code?: string } }[] };
        doc.jobId = body.data?.uploadDocument?.job?.id;
        if (!doc.jobId) count(tenant.errors, body.errors?.[0]?.extensions?.code ?? `HTTP_${response.statusCode}`);
      } catch (error) {
        count(tenant.errors, `NETWORK_${String((error as { code?: unknown }).code ?? (error as Error).name)}`);
      }
      doc.uploadEnd = this.now();
    })();
    const polled = probe ? answered.then(() => this.poll(tenant, doc)) : Promise.resolve();
    const settled = answered.then(() => {
      if (!doc.jobId || !track) return;
      const client = tenant.clients[this.docs.length % tenant.clients.length]!;
      return new Promise<void>((resolve) => {
        client.subscribe<{ jobCompleted: { status: string; completedAt: string | null; error: { code: string } | null } }>(
          { query: JOB_COMPLETED, variables: { id: doc.jobId } },
          {
            next: (m) => {
              if (m.errors) count(tenant.errors, String(m.errors[0]?.extensions?.code ?? 'SUBSCRIPTION_ERROR'));
              if (doc.completed !== undefined || !m.data) return;
              doc.completed = this.now();
              doc.status = m.data.jobCompleted.status;
              if (m.data.jobCompleted.completedAt) doc.completedAt = Date.parse(m.data.jobCompleted.completedAt) - this.t0Epoch;
              if (doc.status !== 'COMPLETED') count(tenant.errors, m.data.jobCompleted.error?.code ?? doc.status);
            },
            error: () => {
              if (doc.completed === undefined) count(tenant.errors, 'SUBSCRIPTION_CLOSED');
              resolve();
            },
            complete: () => {
              if (doc.completed === undefined) count(tenant.errors, 'NO_MESSAGE');
              resolve();
            },
          },
        );
      });
    });
    return { doc, answered, settled: Promise.all([settled, polled]).then(() => undefined) };
  }

  /** Ask `job(id:)` every BENCH_POLL_MS until it answers a terminal status (or the run's timeout). */
  private async poll(tenant: Tenant, doc: Doc): Promise<void> {
    if (!doc.jobId) return;
    const deadline = this.now() + TIMEOUT_S * 1000;
    while (this.now() < deadline) {
      try {
        const response = await request(this.system.httpUrl, {
          method: 'POST',
          dispatcher: this.dispatcher,
          headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.token}` },
          body: JSON.stringify({ query: JOB_STATUS, variables: { id: doc.jobId } }),
        });
        const body = (await response.body.json()) as { data?: { job?: { status?: string } | null } };
        if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(body.data?.job?.status ?? '')) {
          doc.viewed = this.now();
          return;
        }
      } catch {
        // asked again below
      }
      await sleep(POLL_MS);
    }
  }

  /**
   * `documents` uploads for `tenant` as fast as the gateway takes them: BENCH_UPLOAD_CONCURRENCY
   * in flight, the next one sent when one is answered (not when its job ends).
   */
  bulk(tenant: Tenant, documents: number, priority: Priority, track: boolean): Bulk {
    return this.bulks([{ tenant, documents, priority, track }])[0]!;
  }

  /**
   * Several tenants' bulk uploads at once. Their first uploads are sent in turn (one of each
   * tenant, then the next of each, …), so none is ahead by the order the benchmark sent them in.
   */
  bulks(specs: readonly { tenant: Tenant; documents: number; priority: Priority; track: boolean }[]): Bulk[] {
    const started = specs.map(({ tenant, documents, priority, track }) => {
      const docs: Doc[] = [];
      const settled: Promise<void>[] = [];
      let sent = 0;
      const slot = async () => {
        while (sent < documents) {
          sent++;
          const upload = this.upload(tenant, priority, track);
          docs.push(upload.doc);
          settled.push(upload.settled);
          await upload.answered;
        }
      };
      return { docs, settled, slot, slots: [] as Promise<void>[], count: Math.min(UPLOAD_CONCURRENCY, documents) };
    });
    for (let i = 0; i < UPLOAD_CONCURRENCY; i++) for (const s of started) if (i < s.count) s.slots.push(s.slot());
    return started.map(({ docs, settled, slots }) => {
      const answered = Promise.all(slots).then(() => undefined);
      return { docs, answered, settled: answered.then(() => Promise.all(settled)).then(() => undefined) };
    });
  }
}

interface Bulk {
  docs: Doc[];
  /** Every upload answered. */
  answered: Promise<void>;
  /** That, and every tracked job ended. */
  settled: Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Figures

const seconds = (ms: number) => Math.round(ms) / 1000;

interface Uploads {
  sent: number;
  accepted: number;
  /** First upload's start → last upload's answer, s. */
  seconds: number;
  perSecond: number;
  /** The first upload's answer, s from the window's start. */
  firstAnswer: number;
}

function uploadsOf(docs: readonly Doc[]): Uploads {
  const start = Math.min(...docs.map((d) => d.uploadStart));
  const end = Math.max(...docs.map((d) => d.uploadEnd ?? d.uploadStart));
  const accepted = docs.filter((d) => d.jobId).length;
  return { sent: docs.length, accepted, seconds: seconds(end - start), perSecond: accepted / ((end - start) / 1000), firstAnswer: seconds(Math.min(...docs.map((d) => d.uploadEnd ?? Infinity))) };
}

/** Completions per second since the window's start, by second. */
function perSecond(times: readonly number[]): number[] {
  const buckets: number[] = [];
  for (const t of times) {
    const i = Math.max(0, Math.floor(t / 1000));
    while (buckets.length <= i) buckets.push(0);
    buckets[i]! += 1;
  }
  return buckets;
}

/** What a single waiting document went through, from the benchmark and the test server. */
interface Probe {
  /** Upload's start → its jobCompleted message, ms (null: none came). */
  waitMs: number | null;
  /** Upload's start → its Job.completedAt, ms. */
  completedMs: number | null;
  /** Upload's start → `job(id:)` first answering it ended (asked every BENCH_POLL_MS), ms. */
  viewedMs: number | null;
  /** Upload's start → its answer, ms. */
  uploadMs: number | null;
  /** Upload's start → the test server receiving its chat call, ms. */
  queuedMs: number | null;
  /** Chat calls the test server received after its upload started and before its own. */
  callsAhead: number | null;
  status: string | null;
}

function probeOf(doc: Doc, server: OpenAITestServer, fromRequest: number): Probe {
  const chats = server.requests.slice(fromRequest).filter((r) => r.endpoint === 'chat' && r.status !== 429);
  const own = chats.find((r) => JSON.stringify(r.body ?? '').includes(doc.marker));
  return {
    waitMs: doc.completed === undefined ? null : doc.completed - doc.uploadStart,
    completedMs: doc.completedAt === undefined ? null : doc.completedAt - doc.uploadStart,
    viewedMs: doc.viewed === undefined ? null : doc.viewed - doc.uploadStart,
    uploadMs: doc.uploadEnd === undefined ? null : doc.uploadEnd - doc.uploadStart,
    queuedMs: own ? own.receivedAt - doc.uploadStartEpoch : null,
    callsAhead: own ? chats.filter((r) => r.receivedAt >= doc.uploadStartEpoch && r.receivedAt < own.receivedAt).length : null,
    status: doc.status ?? null,
  };
}

interface Drain {
  completed: number;
  /** First and last jobCompleted of the tenant, s from the window's start. */
  first: number | null;
  last: number | null;
  /** Documents/s from the first completion to the last: (completed − 1) / (last − first). */
  docsPerSecond: number | null;
}

/** Which time a completion is counted at: Job.completedAt, or the jobCompleted message's arrival. */
type Clock = 'completedAt' | 'completed';

function drainOf(docs: readonly Doc[], clock: Clock = 'completedAt'): Drain {
  const times = docs.filter((d) => d.status === 'COMPLETED' && d[clock] !== undefined).map((d) => d[clock]!);
  if (times.length === 0) return { completed: 0, first: null, last: null, docsPerSecond: null };
  const first = Math.min(...times);
  const last = Math.max(...times);
  return { completed: times.length, first: seconds(first), last: seconds(last), docsPerSecond: last > first ? (times.length - 1) / ((last - first) / 1000) : null };
}

interface Window {
  /** s from the window's start. */
  from: number;
  to: number;
  completions: Record<string, number>;
  shares: Record<string, number>;
}

interface Shares {
  /** First completion of any tenant, and the moment the first tenant had all its documents completed, s. */
  from: number;
  until: number;
  /** Full BENCH_WINDOW_S windows. */
  windows: Window[];
  /** What is left after the last full window (shorter than BENCH_WINDOW_S), or null. */
  partial: Window | null;
  /** Smallest and largest share of any tenant in any full window (null: no full window). */
  min: number | null;
  max: number | null;
}

function sharesOf(byTenant: Record<string, Doc[]>, clock: Clock = 'completedAt'): Shares {
  const done = Object.fromEntries(Object.entries(byTenant).map(([t, docs]) => [t, docs.filter((d) => d[clock] !== undefined).map((d) => d[clock]!)]));
  const all = Object.values(done).flat();
  const from = Math.min(...all);
  // The first tenant to drain: the earliest last completion among the tenants.
  const until = Math.min(...Object.values(done).map((times) => Math.max(...times)));
  const windowOf = (start: number, end: number, inclusive: boolean): Window => {
    const completions = Object.fromEntries(Object.entries(done).map(([t, times]) => [t, times.filter((x) => x >= start && (inclusive ? x <= end : x < end)).length]));
    const total = Object.values(completions).reduce((a, b) => a + b, 0);
    return { from: seconds(start), to: seconds(end), completions, shares: Object.fromEntries(Object.entries(completions).map(([t, n]) => [t, total > 0 ? n / total : 0])) };
  };
  const windows: Window[] = [];
  let start = from;
  for (; start + WINDOW_S * 1000 <= until; start += WINDOW_S * 1000) windows.push(windowOf(start, start + WINDOW_S * 1000, false));
  const partial = until > start ? windowOf(start, until, true) : null;
  const shares = windows.flatMap((w) => Object.values(w.shares));
  return { from: seconds(from), until: seconds(until), windows, partial, min: shares.length ? Math.min(...shares) : null, max: shares.length ? Math.max(...shares) : null };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

interface NoisyFigures {
  /** Tenant B's one document. */
  b: Probe;
  /** Tenant A's documents completed before B's jobCompleted. */
  aCompletedBeforeB: number | null;
  aUploads: Uploads;
  /** By Job.completedAt. */
  aDrain: Drain;
  /** By the jobCompleted messages' arrival. */
  aDrainReceived: Drain;
  /** A's completions (Job.completedAt) per second from the window's start. */
  aPerSecond: number[];
}
interface TenantsFigures {
  uploads: Record<string, Uploads>;
  drains: Record<string, Drain>;
  /** By Job.completedAt. */
  shares: Shares;
  /** By the jobCompleted messages' arrival. */
  sharesReceived: Shares;
  /** Completions (Job.completedAt) per second from the window's start, by tenant. */
  perSecond: Record<string, number[]>;
}
interface PriorityFigures {
  /** The HIGH document. */
  high: Probe;
  lowUploads: Uploads;
}
type Figures = NoisyFigures | TenantsFigures | PriorityFigures;

interface ScenarioContext {
  system: RunningSystem;
  server: OpenAITestServer;
  /** The test server's request log from here on belongs to the measured window. */
  fromRequest: number;
  /** The measured window's load; its start is kept (ms since the epoch) for the test server's log. */
  load(): Load;
}

const probeMarker = (tenant: Tenant) => `${tenant.name}-probe-${randomBytes(6).toString('hex')}`;

/** Wait until `ms` after the load's start. */
const until = (load: Load, ms: number) => sleep(Math.max(0, ms - load.now()));

async function noisy(context: ScenarioContext): Promise<NoisyFigures> {
  const [a, b] = await Promise.all([openTenant(context.system, 'tenant-a'), openTenant(context.system, 'tenant-b')]);
  try {
    const load = context.load();
    const bulk = load.bulk(a, BULK, 'NORMAL', true);
    await until(load, DELAY_MS);
    const probe = load.upload(b, 'NORMAL', true, probeMarker(b), true);
    await Promise.all([bulk.settled, probe.settled]);
    const bDone = probe.doc.completed;
    return {
      b: probeOf(probe.doc, context.server, context.fromRequest),
      aCompletedBeforeB: bDone === undefined ? null : bulk.docs.filter((d) => d.completed !== undefined && d.completed < bDone).length,
      aUploads: uploadsOf(bulk.docs),
      aDrain: drainOf(bulk.docs),
      aDrainReceived: drainOf(bulk.docs, 'completed'),
      aPerSecond: perSecond(bulk.docs.flatMap((d) => (d.completedAt === undefined ? [] : [d.completedAt]))),
    };
  } finally {
    await Promise.all([disposeAll(a.clients), disposeAll(b.clients)]);
    errorsOf.push(a, b);
  }
}

async function tenants(context: ScenarioContext): Promise<TenantsFigures> {
  const all = await Promise.all(Array.from({ length: TENANTS }, (_, i) => openTenant(context.system, `tenant-${i + 1}`)));
  try {
    const load = context.load();
    const bulks = load.bulks(all.map((tenant) => ({ tenant, documents: TENANT_DOCS, priority: 'NORMAL' as const, track: true }))).map((bulk, i) => ({ tenant: all[i]!, ...bulk }));
    await Promise.all(bulks.map((b) => b.settled));
    const byTenant = Object.fromEntries(bulks.map((b) => [b.tenant.name, b.docs]));
    return {
      uploads: Object.fromEntries(bulks.map((b) => [b.tenant.name, uploadsOf(b.docs)])),
      drains: Object.fromEntries(bulks.map((b) => [b.tenant.name, drainOf(b.docs)])),
      shares: sharesOf(byTenant),
      sharesReceived: sharesOf(byTenant, 'completed'),
      perSecond: Object.fromEntries(bulks.map((b) => [b.tenant.name, perSecond(b.docs.flatMap((d) => (d.completedAt === undefined ? [] : [d.completedAt])))])),
    };
  } finally {
    await Promise.all(all.map((t) => disposeAll(t.clients)));
    errorsOf.push(...all);
  }
}

async function priority(context: ScenarioContext): Promise<PriorityFigures> {
  const a = await openTenant(context.system, 'tenant-a');
  try {
    const load = context.load();
    // The LOW backlog is not waited for: only its uploads' answers.
    const bulk = load.bulk(a, BULK, 'LOW', false);
    await until(load, DELAY_MS);
    const probe = load.upload(a, 'HIGH', true, probeMarker(a), true);
    await Promise.all([bulk.answered, probe.settled]);
    return { high: probeOf(probe.doc, context.server, context.fromRequest), lowUploads: uploadsOf(bulk.docs) };
  } finally {
    await disposeAll(a.clients);
    errorsOf.push(a);
  }
}

/** The tenants of the scenario running now, for their error counts. */
let errorsOf: Tenant[] = [];

const SCENARIO: Record<Scenario, (context: ScenarioContext) => Promise<Figures>> = { noisy, tenants, priority };

// ---------------------------------------------------------------------------------------------
// Runs

interface RunResult {
  mode: Mode;
  scenario: Scenario;
  order: Order;
  /** Which of the BENCH_ROUNDS rounds (from 0). */
  round: number;
  namespace: string;
  figures: Figures | null;
  failure?: string;
  /** Upload and subscription errors by tenant and code. */
  errors: Record<string, Record<string, number>>;
  /** The test server in the measured window: chat calls received, at most in flight, refused (429). */
  provider: { chatCalls: number; maxInFlight: number; refused: number };
  /** Chat calls the test server received (429s not counted) per second of the measured window, by the tenant of their document. */
  callsPerSecond: Record<string, number[]>;
  /** Warn/error log lines of every process, counted by message. */
  logs: Record<string, Record<string, number>>;
  exits: string[];
}

/** The tenant a chat call is for, from the document's marker in its prompt. */
const tenantOfCall = (body: unknown) => /Report (tenant-[a-z0-9]+)-/.exec(JSON.stringify(body ?? ''))?.[1] ?? 'other';

function callsPerSecond(server: OpenAITestServer, fromRequest: number, windowStart: number): Record<string, number[]> {
  const byTenant: Record<string, number[]> = {};
  for (const r of server.requests.slice(fromRequest)) {
    if (r.endpoint !== 'chat' || r.status === 429) continue;
    const buckets = (byTenant[tenantOfCall(r.body)] ??= []);
    const i = Math.max(0, Math.floor((r.receivedAt - windowStart) / 1000));
    while (buckets.length <= i) buckets.push(0);
    buckets[i]! += 1;
  }
  return Object.fromEntries(Object.entries(byTenant).sort(([a], [b]) => a.localeCompare(b)));
}

async function runOne(mode: Mode, scenario: Scenario, order: Order, round: number): Promise<RunResult> {
  const server = await startOpenAITestServer({ apiKey: API_KEY, latencyMs: LATENCY_MS, maxConcurrent: CAPACITY });
  const dispatcher = new Agent({ connections: 512, keepAliveTimeout: 30_000 });
  let system: RunningSystem | undefined;
  errorsOf = [];
  try {
    system = await startSystem({ name: 'current', dir: ROOT, commit: 'HEAD', changedFiles: 0 }, mode, {
      env: {
        OPENAI_API_KEY: API_KEY,
        OPENAI_BASE_URL: server.baseURL,
        AI_MODEL: 'bench-model',
        ANALYSIS_ORDER: order,
        ANALYSIS_CONCURRENCY: String(CONCURRENCY),
        ...(TENANT_CONCURRENCY !== undefined ? { ANALYSIS_TENANT_CONCURRENCY: String(TENANT_CONCURRENCY) } : {}),
      },
    });
    const running = system;
    if (WARMUP > 0) {
      const warm = await openTenant(running, 'warm-up');
      try {
        await within(new Load(running, dispatcher).bulk(warm, WARMUP, 'NORMAL', true).settled, TIMEOUT_S * 1000, 'warm-up');
      } finally {
        await disposeAll(warm.clients);
      }
    }
    server.resetChatStats();
    const fromRequest = server.requests.length;
    let figures: Figures | null = null;
    let failure: string | undefined;
    let windowStart = Date.now();
    try {
      const load = () => {
        const started = new Load(running, dispatcher);
        windowStart = started.t0Epoch;
        return started;
      };
      figures = await within(SCENARIO[scenario]({ system: running, server, fromRequest, load }), TIMEOUT_S * 1000, `${scenario} (${order})`);
    } catch (error) {
      failure = (error as Error).message.slice(0, 2000);
    }
    const stats = server.chatStats();
    return {
      mode,
      scenario,
      order,
      round,
      namespace: running.namespace,
      figures,
      ...(failure ? { failure } : {}),
      errors: Object.fromEntries(errorsOf.filter((t) => Object.keys(t.errors).length > 0).map((t) => [t.name, t.errors])),
      provider: { chatCalls: server.requests.slice(fromRequest).filter((r) => r.endpoint === 'chat' && r.status !== 429).length, maxInFlight: stats.maxInFlight, refused: stats.refused },
      callsPerSecond: callsPerSecond(server, fromRequest, windowStart),
      logs: Object.fromEntries([...running.log].filter(([, entry]) => entry.counts.size > 0).map(([name, entry]) => [name, Object.fromEntries(entry.counts)])),
      exits: [...running.exits],
    };
  } finally {
    await dispatcher.destroy().catch(() => {});
    const problems = (await system?.stop()) ?? [];
    if (problems.length > 0) console.error(problems.join('\n'));
    await server.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Summary

const fmt = (value: number | null | undefined, digits = 1) => (value === null || value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(digits));
const pct = (value: number | null | undefined) => (value === null || value === undefined ? '—' : `${(value * 100).toFixed(0)}%`);
const present = (values: (number | null | undefined)[]) => values.filter((v): v is number => v !== null && v !== undefined && Number.isFinite(v));
const summary = (values: number[]) => (values.length > 0 ? ratioSummary(values) : null);

interface Figure {
  /** What is measured, e.g. `B's wait, s`. */
  name: string;
  /** Per round (by round index), fair and fifo. */
  fair: (number | null)[];
  fifo: (number | null)[];
  medianFair: number | null;
  medianFifo: number | null;
  /** Within each round: fifo / fair for a wait, fair / fifo for a rate; median and range. */
  ratio: { of: string; rounds: (number | null)[]; summary: ReturnType<typeof ratioSummary> | null } | null;
  doneWhen: { rule: string; met: boolean | null } | null;
}

function summarize(results: readonly RunResult[], mode: Mode, scenario: Scenario): Figure[] {
  const get = (order: Order, round: number) => results.find((r) => r.mode === mode && r.scenario === scenario && r.order === order && r.round === round)?.figures ?? null;
  const rounds = Array.from({ length: ROUNDS }, (_, round) => round);
  const figure = (name: string, pick: (f: Figures) => number | null, ratio: 'fifo/fair' | 'fair/fifo' | null, doneWhen: ((fair: number | null, fifo: number | null, fairRounds: (number | null)[]) => Figure['doneWhen']) | null): Figure => {
    const fair = rounds.map((r) => {
      const f = get('fair', r);
      return f ? pick(f) : null;
    });
    const fifo = rounds.map((r) => {
      const f = get('fifo', r);
      return f ? pick(f) : null;
    });
    const medianFair = present(fair).length ? median(present(fair)) : null;
    const medianFifo = present(fifo).length ? median(present(fifo)) : null;
    const ratios = rounds.map((r) => (fair[r] != null && fifo[r] != null && (ratio === 'fifo/fair' ? fair[r] : fifo[r]) !== 0 ? (ratio === 'fifo/fair' ? fifo[r]! / fair[r]! : fair[r]! / fifo[r]!) : null));
    return {
      name,
      fair,
      fifo,
      medianFair,
      medianFifo,
      ratio: ratio ? { of: ratio, rounds: ratios, summary: summary(present(ratios)) } : null,
      doneWhen: doneWhen ? doneWhen(medianFair, medianFifo, fair) : null,
    };
  };
  const waitRule = (fair: number | null) => ({ rule: `median fair ≤ ${seconds(THRESHOLD.waitMs)} s (3 × L)`, met: fair === null ? null : fair <= THRESHOLD.waitMs / 1000 });
  if (scenario === 'noisy') {
    return [
      figure("B's wait, s", (f) => ((f as NoisyFigures).b.waitMs ?? NaN) / 1000, 'fifo/fair', waitRule),
      figure("B's upload → Job.completedAt, s", (f) => ((f as NoisyFigures).b.completedMs ?? NaN) / 1000, null, null),
      figure("B's upload → job(id:) ended, s", (f) => ((f as NoisyFigures).b.viewedMs ?? NaN) / 1000, null, null),
      figure("B's upload → its call, s", (f) => ((f as NoisyFigures).b.queuedMs ?? NaN) / 1000, null, null),
      figure("calls started before B's", (f) => (f as NoisyFigures).b.callsAhead, null, null),
      figure(`A's drain, docs/s (C/L ${fmt(LIMIT)})`, (f) => (f as NoisyFigures).aDrain.docsPerSecond, 'fair/fifo', (fair, fifo) => ({
        rule: `median fair ≥ ${THRESHOLD.drainOfFifo} × median fifo`,
        met: fair === null || fifo === null ? null : fair >= THRESHOLD.drainOfFifo * fifo,
      })),
      figure("A's drain as received, docs/s", (f) => (f as NoisyFigures).aDrainReceived.docsPerSecond, 'fair/fifo', null),
      figure("A's uploads, /s", (f) => (f as NoisyFigures).aUploads.perSecond, null, null),
    ];
  }
  if (scenario === 'tenants') {
    const inRange = (v: number | null) => v !== null && v >= THRESHOLD.share.min && v <= THRESHOLD.share.max;
    return [
      figure('smallest share in a window', (f) => (f as TenantsFigures).shares.min, null, (_, __, fairRounds) => ({
        rule: `every fair window ${pct(THRESHOLD.share.min)}–${pct(THRESHOLD.share.max)}`,
        met: fairRounds.every((v) => v === null) ? null : fairRounds.every(inRange),
      })),
      figure('largest share in a window', (f) => (f as TenantsFigures).shares.max, null, (_, __, fairRounds) => ({
        rule: `every fair window ${pct(THRESHOLD.share.min)}–${pct(THRESHOLD.share.max)}`,
        met: fairRounds.every((v) => v === null) ? null : fairRounds.every(inRange),
      })),
      figure('smallest share, as received', (f) => (f as TenantsFigures).sharesReceived.min, null, null),
      figure('largest share, as received', (f) => (f as TenantsFigures).sharesReceived.max, null, null),
      figure('windows (full)', (f) => (f as TenantsFigures).shares.windows.length, null, null),
      figure('first tenant drained at, s', (f) => (f as TenantsFigures).shares.until, null, null),
    ];
  }
  return [
    figure("HIGH's wait, s", (f) => ((f as PriorityFigures).high.waitMs ?? NaN) / 1000, 'fifo/fair', waitRule),
    figure("HIGH's upload → Job.completedAt, s", (f) => ((f as PriorityFigures).high.completedMs ?? NaN) / 1000, null, null),
    figure("HIGH's upload → job(id:) ended, s", (f) => ((f as PriorityFigures).high.viewedMs ?? NaN) / 1000, null, null),
    figure("HIGH's upload → its call, s", (f) => ((f as PriorityFigures).high.queuedMs ?? NaN) / 1000, null, null),
    figure("calls started before the HIGH's", (f) => (f as PriorityFigures).high.callsAhead, null, null),
    figure("A's LOW uploads, /s", (f) => (f as PriorityFigures).lowUploads.perSecond, null, null),
  ];
}

function printSummary(mode: Mode, scenario: Scenario, figures: Figure[]): void {
  const isShare = scenario === 'tenants';
  const show = (v: number | null, name: string) => (isShare && name.includes('share') ? pct(v) : fmt(v, name.startsWith('calls') || name.startsWith('windows') ? 0 : name.includes('/s') ? 1 : 2));
  console.log(`\n${mode} · ${scenario}`);
  console.log(`  ${'figure'.padEnd(34)} ${'fair, by round'.padEnd(22)} ${'fifo, by round'.padEnd(22)} ${'fair med'.padStart(9)} ${'fifo med'.padStart(9)}  ratio by round (median)      done when`);
  for (const f of figures) {
    const byRound = (values: (number | null)[]) => values.map((v) => show(v, f.name)).join(' ');
    const ratio = f.ratio?.summary ? `${f.ratio.of} ${f.ratio.rounds.map((r) => fmt(r, 2)).join(' ')} (${fmt(f.ratio.summary.median, 2)})` : '';
    const done = f.doneWhen ? `${f.doneWhen.rule}: ${f.doneWhen.met === null ? 'not measured' : f.doneWhen.met ? 'met' : 'NOT met'}` : '';
    console.log(`  ${f.name.padEnd(34)} ${byRound(f.fair).padEnd(22)} ${byRound(f.fifo).padEnd(22)} ${show(f.medianFair, f.name).padStart(9)} ${show(f.medianFifo, f.name).padStart(9)}  ${ratio.padEnd(28)} ${done}`);
  }
}

function printRun(r: RunResult): void {
  const label = `${r.mode} ${r.scenario} ${r.order} ${r.round + 1}/${ROUNDS}`;
  const errors = Object.entries(r.errors).map(([t, codes]) => `${t}: ${Object.entries(codes).map(([c, n]) => `${c} ${n}`).join(', ')}`).join('; ') || 'none';
  const provider = `calls ${r.provider.chatCalls}, at most ${r.provider.maxInFlight} in flight, ${r.provider.refused} refused`;
  let line: string;
  if (!r.figures) line = `FAILED: ${r.failure}`;
  else if (r.scenario === 'noisy') {
    const f = r.figures as NoisyFigures;
    line =
      `B waited ${fmt((f.b.waitMs ?? NaN) / 1000, 2)} s (upload answered in ${fmt((f.b.uploadMs ?? NaN) / 1000, 2)} s, its call after ${fmt((f.b.queuedMs ?? NaN) / 1000, 2)} s, ${f.b.callsAhead ?? '—'} calls before it, completedAt after ${fmt((f.b.completedMs ?? NaN) / 1000, 2)} s, job(id:) ended after ${fmt((f.b.viewedMs ?? NaN) / 1000, 2)} s, ${f.aCompletedBeforeB ?? '—'} of A's received before it); ` +
      `A: ${f.aUploads.accepted} uploads in ${fmt(f.aUploads.seconds)} s (${fmt(f.aUploads.perSecond)}/s), ${f.aDrain.completed} completed ${fmt(f.aDrain.first)}–${fmt(f.aDrain.last)} s, drain ${fmt(f.aDrain.docsPerSecond)} docs/s (as received ${fmt(f.aDrainReceived.docsPerSecond)}; C/L ${fmt(LIMIT)})`;
  } else if (r.scenario === 'tenants') {
    const f = r.figures as TenantsFigures;
    const windows = (x: Shares) =>
      `${x.windows.map((w) => Object.values(w.shares).map(pct).join('/')).join('  ') || '—'}${x.partial ? `  (last ${fmt(x.partial.to - x.partial.from)} s: ${Object.values(x.partial.shares).map(pct).join('/')})` : ''}; min ${pct(x.min)}, max ${pct(x.max)}`;
    line =
      `shares per ${WINDOW_S} s window (Job.completedAt) from ${fmt(f.shares.from)} s to ${fmt(f.shares.until)} s: ${windows(f.shares)}; as received from ${fmt(f.sharesReceived.from)} s: ${windows(f.sharesReceived)}; ` +
      `each drained at ${Object.values(f.drains).map((d) => fmt(d.last)).join(', ')} s`;
  } else {
    const f = r.figures as PriorityFigures;
    line = `HIGH waited ${fmt((f.high.waitMs ?? NaN) / 1000, 2)} s (upload answered in ${fmt((f.high.uploadMs ?? NaN) / 1000, 2)} s, its call after ${fmt((f.high.queuedMs ?? NaN) / 1000, 2)} s, ${f.high.callsAhead ?? '—'} calls before it, completedAt after ${fmt((f.high.completedMs ?? NaN) / 1000, 2)} s, job(id:) ended after ${fmt((f.high.viewedMs ?? NaN) / 1000, 2)} s); LOW: ${f.lowUploads.accepted} uploads in ${fmt(f.lowUploads.seconds)} s`;
  }
  console.log(`${label.padEnd(28)} ${line}; ${provider}; errors: ${errors}`);
  for (const [name, counts] of Object.entries(r.logs)) console.log(`${''.padEnd(28)} ${name} logged: ${Object.entries(counts).map(([l, n]) => `${n}× ${l}`).join('; ')}`);
  for (const exit of r.exits) console.log(`${''.padEnd(28)} ${exit}`);
}

async function main(): Promise<void> {
  const signal = onInterrupt(cleanupLive);
  console.log(
    `fairness benchmark: the provider answers each chat completion after L = ${LATENCY_MS} ms and refuses calls above C = ${CAPACITY} at once (limit C / L = ${fmt(LIMIT)} docs/s); ` +
      `ANALYSIS_CONCURRENCY=${CONCURRENCY}${TENANT_CONCURRENCY !== undefined ? `, ANALYSIS_TENANT_CONCURRENCY=${TENANT_CONCURRENCY}` : ''}; ` +
      `${MODES.join(', ')}; ${RUN_SCENARIOS.join(', ')}; ANALYSIS_ORDER fair and fifo in ${ROUNDS} round(s), the order reversed each round`,
  );
  console.log(
    `  noisy: A uploads ${BULK}, B one ${DELAY_MS} ms after A's first; tenants: ${TENANTS} × ${TENANT_DOCS} at once, shares per ${WINDOW_S} s window; priority: A uploads ${BULK} LOW, one HIGH ${DELAY_MS} ms after; ` +
      `${UPLOAD_CONCURRENCY} uploads in flight per tenant`,
  );
  const started = new Date();
  const results: RunResult[] = [];
  for (let round = 0; round < ROUNDS && !signal.interrupted; round++) {
    const orders = round % 2 === 0 ? ORDERS : [...ORDERS].reverse();
    for (const mode of MODES) {
      for (const scenario of RUN_SCENARIOS) {
        for (const order of orders) {
          if (signal.interrupted) break;
          const at = performance.now();
          const r = await runOne(mode, scenario, order, round).catch(
            (error: unknown): RunResult => ({ mode, scenario, order, round, namespace: '', figures: null, failure: `did not run: ${(error as Error).message.slice(0, 2000)}`, errors: {}, provider: { chatCalls: 0, maxInFlight: 0, refused: 0 }, callsPerSecond: {}, logs: {}, exits: [] }),
          );
          results.push(r);
          printRun(r);
          console.error(`  (${fmt((performance.now() - at) / 1000, 0)} s with start and clean-up)`);
        }
      }
    }
  }
  if (signal.interrupted) return;
  const summaries = MODES.map((mode) => ({ mode, scenarios: RUN_SCENARIOS.map((scenario) => ({ scenario, figures: summarize(results, mode, scenario) })) }));
  console.log(`\nfair next to fifo (the same run's baseline), by round and median; ratios taken within a round; done-when thresholds of issue 26 (stated for the deployed system)`);
  for (const s of summaries) for (const { scenario, figures } of s.scenarios) printSummary(s.mode, scenario, figures);
  const file = writeResult('fairness', {
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    settings: {
      BENCH_MODES: MODES,
      BENCH_SCENARIOS: RUN_SCENARIOS,
      BENCH_ROUNDS: ROUNDS,
      BENCH_BULK: BULK,
      BENCH_TENANTS: TENANTS,
      BENCH_TENANT_DOCS: TENANT_DOCS,
      BENCH_DELAY_MS: DELAY_MS,
      BENCH_WINDOW_S: WINDOW_S,
      BENCH_LATENCY_MS: LATENCY_MS,
      BENCH_CAPACITY: CAPACITY,
      ANALYSIS_CONCURRENCY: CONCURRENCY,
      ANALYSIS_TENANT_CONCURRENCY: TENANT_CONCURRENCY ?? null,
      BENCH_UPLOAD_CONCURRENCY: UPLOAD_CONCURRENCY,
      BENCH_WS_CLIENTS: WS_CLIENTS,
      BENCH_WARMUP: WARMUP,
      BENCH_TIMEOUT_S: TIMEOUT_S,
      BENCH_POLL_MS: POLL_MS,
    },
    limitDocsPerSecond: LIMIT,
    thresholds: THRESHOLD,
    method:
      'a fresh system and test server per run; each scenario with ANALYSIS_ORDER=fair and =fifo in every round, the two in reversed turn each round (fair, fifo; fifo, fair; …); ' +
      'ratios taken within a round, then their median and range; medians of fair and of fifo over the rounds; times are the benchmark client’s (upload start, jobCompleted received)',
    summary: summaries,
    results,
  });
  console.log(`\nwrote ${file}`);
}

await runBenchmark(main);
