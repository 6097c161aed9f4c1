/**
 * Child process of `pnpm bench:subscriptions`: one Tributary started with `startEmbedded`
 * (gateway, four subgraphs, in-memory bus, PGlite in memory), N RUNNING jobs of tenant
 * `bench` in the jobs view, and the producer of job changes.
 *
 * The producer changes jobs the way the jobs service does: in one transaction of the jobs
 * database it updates the job row (attempts + 1, updated_at = now) and writes `job.updated`
 * to the outbox (core's `publish`); the jobs service's own outbox relay publishes it to the bus
 * on the commit's NOTIFY, the gateway's JobEventHub consumes it, and the subscription re-runs
 * the client's selection through the gateway and the jobs subgraph. So a message's
 * `updatedAt` is the moment the change was made, and receipt − updatedAt is the whole path
 * from commit to client.
 *
 * With BENCH_PRODUCER=bus the producer publishes the `job.updated` envelope straight onto the
 * bus instead (no transaction, no outbox, no relay: the embedded database is most of this
 * process's CPU otherwise); the row is not changed, so each publish time is reported and the
 * client's receipts are matched to them per job.
 */
import { publish } from '@tributary/core/events';
import { metrics } from '@tributary/core/metrics';
import { signToken } from '@tributary/gateway';
import { startEmbedded } from '@tributary/embedded';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../gateway/ipc.ts';
import { configureFastDataSource } from '../gateway/patch.ts';
import { percentile } from '../results.ts';

const N = Number(process.argv[2]);
// BENCH_DATASOURCE=before: the gateway's subgraph calls as before FastDataSource (Apollo's default fetcher).
if (process.env.BENCH_DATASOURCE === 'before') configureFastDataSource({ fetcher: 'default', dedupe: false });

// BENCH_TRACE_ERRORS=1: print the errors of the queries subscriptions run (graphql-ws turns
// them into "e.toJSON is not a function" for the client), unmasked (NODE_ENV=development).
if (process.env.BENCH_TRACE_ERRORS) {
  const { ApolloServer } = await import('@apollo/server');
  const original = ApolloServer.prototype.executeOperation;
  const seen = new Map<string, number>();
  ApolloServer.prototype.executeOperation = async function (this: unknown, ...args: unknown[]) {
    const response = await (original as (...a: unknown[]) => Promise<{ body: { kind: string; singleResult?: { errors?: unknown[] } } }>).apply(this, args);
    for (const error of response.body.singleResult?.errors ?? []) {
      const key = JSON.stringify(error).slice(0, 400);
      seen.set(key, (seen.get(key) ?? 0) + 1);
      if (seen.get(key) === 1) console.error(`subscription query error: ${key}`);
    }
    return response;
  } as typeof original;
}
const TENANT = 'bench';
const secret = randomBytes(32).toString('base64url');
const system = await startEmbedded({
  env: {
    // Production masks internal errors; the error trace wants them whole.
    NODE_ENV: process.env.BENCH_TRACE_ERRORS ? 'development' : 'production',
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    TRIBUTARY_DATA_DIR: 'memory://',
    TRIBUTARY_NAMESPACE: `bench_${process.pid}`,
    AUTH_JWT_SECRET: secret,
  },
  port: 0,
});
const jobs = system.services.find((s) => s.name === 'jobs');
if (!jobs) throw new Error('no jobs service in the embedded system');

const documentsService = system.services.find((s) => s.name === 'documents');
if (!documentsService) throw new Error('no documents service in the embedded system');
const jobIds = Array.from({ length: N }, () => randomUUID());
/** Each job's document: documents answers `job(id:)`, so every job has one there, as after an upload. */
const documentIds = new Map<string, string>(jobIds.map((id) => [id, randomUUID()]));
const created = new Date();
for (let i = 0; i < jobIds.length; i += 500) {
  const chunk = jobIds.slice(i, i + 500);
  await jobs.db
    .fork()
    .execute(
      `insert into jobs (id, tenant_id, document_id, status, attempts, created_at, updated_at) values ${chunk.map(() => "(?, ?, ?, 'RUNNING', 1, ?, ?)").join(', ')}`,
      chunk.flatMap((id) => [id, TENANT, documentIds.get(id)!, created, created]),
      'run',
    );
  await documentsService.db
    .fork()
    .execute(
      `insert into documents (id, tenant_id, title, content, text, content_type, size, job_id, created_at) values ${chunk.map(() => "(?, ?, 'Bench', 'Bench', 'Bench', 'text/plain', 5, ?, ?)").join(', ')}`,
      chunk.flatMap((id) => [documentIds.get(id)!, TENANT, id, created]),
      'run',
    );
}

const BUS = process.env.BENCH_PRODUCER === 'bus';
/** [job id, publish time (epoch ms)] of each event, in bus mode. */
let publishes: [string, number][] = [];

/** One job.updated envelope straight onto the bus, as the jobs service's relay would publish it. */
async function publishDirect(jobId: string): Promise<void> {
  const at = performance.timeOrigin + performance.now();
  const now = new Date(at).toISOString();
  let documentId = documentIds.get(jobId);
  if (!documentId) documentIds.set(jobId, (documentId = randomUUID()));
  const id = randomUUID();
  const envelope = {
    id,
    type: 'job.updated',
    source: 'jobs',
    specversion: '1.0',
    time: now,
    dataschema: 'job.updated/v1',
    subject: jobId,
    tenantid: TENANT,
    data: { jobId, documentId, status: 'RUNNING', attempts: 2, error: null, createdAt: created.toISOString(), updatedAt: now, completedAt: null },
  };
  publishes.push([jobId, at]);
  await jobs!.transport.publish([{ routingKey: 'job.updated', messageId: id, body: Buffer.from(JSON.stringify(envelope)) }]);
}

/** Commit → JobEventHub delivery, ms, per change: where the time goes (the rest is the subscription). */
let toHub: number[] = [];
let commits: number[] = [];

/** One job change, committed with its job.updated event. */
async function change(jobId: string): Promise<void> {
  const t0 = performance.now();
  const stop = system.gateway.hub.listen({ events: ['job.updated/v1'], tenantId: TENANT, index: { path: ['jobId'], value: jobId } }, () => {
    toHub.push(performance.now() - t0);
    stop();
  });
  await jobs!.db.fork().transactional(async (em) => {
    const now = new Date();
    const [row] = await em.execute<{ document_id: string; attempts: number; created_at: Date }[]>('update jobs set attempts = attempts + 1, updated_at = ? where id = ? returning document_id, attempts, created_at', [now, jobId]);
    if (!row) throw new Error(`job ${jobId} is not in the view`);
    await publish(em as never, 'jobs', [
      {
        type: 'job.updated',
        subject: jobId,
        tenantId: TENANT,
        data: { jobId, documentId: row.document_id, status: 'RUNNING', attempts: row.attempts, error: null, createdAt: new Date(row.created_at).toISOString(), updatedAt: now.toISOString(), completedAt: null },
      },
    ]);
  });
  commits.push(performance.now() - t0);
}

/** Open loop: a change every 1/rate s, whatever the previous ones are doing (at most 1 000 in flight). */
async function produce({ rate, seconds }: { rate: number; seconds: number }) {
  // BENCH_PROFILE=1: a CPU profile of this process while producing, in bench/results/profiles/.
  const profiler = process.env.BENCH_PROFILE ? new Session() : undefined;
  if (profiler) {
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  }
  const total = Math.round(rate * seconds);
  const inFlight = new Set<Promise<void>>();
  let failed = 0;
  let late = 0;
  const started = performance.now();
  for (let k = 0; k < total; k++) {
    const wait = started + (k * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    else if (wait < -10) late++;
    if (inFlight.size >= 1_000) await Promise.race(inFlight);
    const p: Promise<void> = (BUS ? publishDirect : change)(jobIds[k % jobIds.length]!).then(
      () => void inFlight.delete(p),
      () => {
        failed++;
        inFlight.delete(p);
      },
    );
    inFlight.add(p);
  }
  const issuedSeconds = (performance.now() - started) / 1000;
  await Promise.all(inFlight);
  const committedSeconds = (performance.now() - started) / 1000;
  if (profiler) {
    const { profile } = await profiler.post('Profiler.stop');
    const dir = fileURLToPath(new URL('../results/profiles/', import.meta.url));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `subscriptions-${N}-${process.pid}.cpuprofile`), JSON.stringify(profile));
    profiler.disconnect();
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const summary = (values: number[]) => {
    const sorted = values.sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? null };
  };
  // Each of its own values: the transaction times were once read from the start→hub ones.
  const hub = summary(toHub);
  const commit = summary(commits);
  toHub = [];
  commits = [];
  const published = publishes;
  publishes = [];
  return { published: total - failed, failed, late, issuedSeconds, committedSeconds, commitToHubMs: hub, commitMs: commit, ...(BUS ? { publishes: published } : {}) };
}

const gc = (globalThis as { gc?: () => void }).gc;
serve(
  {
    memory: () => {
      gc?.();
      gc?.();
      const m = process.memoryUsage();
      return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
    },
    listeners: () => system.gateway.hub.size,
    // Requests the jobs subgraph has answered: each new subscription's first status read is one.
    jobsRequests: async () => {
      const { values } = await metrics.httpRequestDuration.get();
      return values.filter((v) => v.metricName?.endsWith('_count') && v.labels.service === 'jobs').reduce((n, v) => n + v.value, 0);
    },
    produce,
  },
  () => system.stop(),
);
process.send!({ type: 'ready', url: system.gateway.wsUrl, data: { jobIds, token: await signToken(secret, { sub: 'bench', tenant: TENANT, expiresIn: '2h' }) } });
