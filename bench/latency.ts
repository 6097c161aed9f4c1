/**
 * `pnpm bench:latency`: upload → jobCompleted latency (p50/p95/p99) and throughput at a fixed
 * upload rate, through the gateway, with the whole system in this process:
 *   - embedded: PGlite and the in-memory bus (`pnpm dev`'s mode)
 *   - real: PostgreSQL and RabbitMQ (random databases and namespace, dropped afterwards)
 * A benchmark, not a test: it prints figures and asserts nothing.
 *
 * Env: BENCH_RATE (uploads/s, default 10), BENCH_SECONDS (default 15), BENCH_MODES
 * (default "embedded,real"), DATABASE_URL, AMQP_URL (defaults: the local services).
 */
import { progress } from '@tributary/core';
import { deleteNamespace } from '@tributary/core/events';
import { dropDatabase } from '@tributary/core/db';
import { namespacedDatabaseEnv, namespacedDatabaseName } from '@tributary/core/testing';
import { signToken } from '@tributary/gateway';
import { startEmbedded } from '@tributary/embedded';
import { workspaceSubgraphs } from '@tributary/schema/subgraphs';
import { createClient } from 'graphql-ws';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { percentile, writeResult } from './results.ts';

const RATE = Number(process.env.BENCH_RATE ?? 10);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const MODES = (process.env.BENCH_MODES ?? 'embedded,real').split(',');
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const SERVICES = workspaceSubgraphs().map((s) => s.name);

const TEXT =
  'The quarterly report shows revenue growth across every region. Customers praised the new analytics ' +
  'dashboard, while support tickets about onboarding fell sharply. The board approved further investment ' +
  'in machine learning infrastructure and data quality. Risks remain in supply chain costs.';

/** Milliseconds as printed, or a dash for a figure of no values. */
const ms = (value: number | null) => (value === null ? '-' : value.toFixed(1));

async function run(mode: string) {
  const id = randomBytes(4).toString('hex');
  const namespace = `bench_${id}`;
  const authSecret = randomBytes(32).toString('base64url');
  const env: Record<string, string | undefined> = {
    ...process.env,
    LOG_LEVEL: 'warn',
    TRIBUTARY_NAMESPACE: namespace,
    AUTH_JWT_SECRET: authSecret,
    INTERNAL_SIGNING_SECRET: randomBytes(32).toString('base64url'),
    // One benchmark user uploads far more than a person would.
    UPLOAD_RATE_LIMIT_PER_MINUTE: '1000000',
  };
  const token = await signToken(authSecret, { sub: 'bench', tenant: 'bench' });
  if (mode === 'embedded') {
    env.TRIBUTARY_DATA_DIR = 'memory://';
    delete env.DATABASE_URL;
    delete env.AMQP_URL;
  } else {
    env.AMQP_URL = AMQP_URL;
    Object.assign(env, namespacedDatabaseEnv(DATABASE_URL, namespace, SERVICES));
  }
  const system = await startEmbedded({ env, port: 0 });
  // Not lazy: a lazy client closes its socket whenever no subscription is active, and a
  // subscription started during that close is completed unanswered.
  const client = createClient({ url: system.gateway.wsUrl, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false, connectionParams: { authorization: `Bearer ${token}` } });
  const latencies: number[] = [];
  let failures = 0;
  let silent = 0;
  const total = RATE * SECONDS;
  const started = performance.now();
  let lastDone = started;
  const one = async (n: number) => {
    const t0 = performance.now();
    const response = await fetch(system.gateway.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({
        query: 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }',
        variables: { input: { title: `Report ${n}`, content: `${TEXT} Reference ${n}.` } },
      }),
    });
    const body = (await response.json()) as { data?: { uploadDocument: { job: { id: string } } } };
    const jobId = body.data?.uploadDocument.job.id;
    if (!jobId) {
      failures++;
      return;
    }
    let received = false;
    await new Promise<void>((resolve) => {
      client.subscribe(
        { query: 'subscription($id: ID!) { jobCompleted(jobId: $id) { status document { analysis { summary } } } }', variables: { id: jobId } },
        {
          next: (message) => {
            received = true;
            const status = (message.data as { jobCompleted?: { status: string } } | undefined)?.jobCompleted?.status;
            if (status === 'COMPLETED') latencies.push(performance.now() - t0);
            else failures++;
            // No dispose() here: jobCompleted completes by itself after its one message, and
            // graphql-ws's client (6.4) counts a dispose in `next` followed by the server's
            // `complete` twice; once its count of active operations reaches 0 it closes the socket
            // (1000), completing every other subscription on it without a message.
            resolve();
          },
          error: () => {
            failures++;
            resolve();
          },
          complete: () => {
            if (!received) silent++;
            resolve();
          },
        },
      );
    });
    lastDone = performance.now();
    bar.tick();
  };
  // Open loop: uploads start on schedule whether or not earlier ones have finished.
  const bar = progress(`${mode} uploads`, total);
  const inFlight: Promise<void>[] = [];
  for (let n = 0; n < total; n++) {
    const due = started + (n * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    inFlight.push(one(n));
  }
  await Promise.all(inFlight);
  bar.done();
  const elapsed = (lastDone - started) / 1000;
  await client.dispose();
  await system.stop();
  if (mode !== 'embedded') {
    const queues = execFileSync('rabbitmqctl', ['-q', 'list_queues', 'name'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim())
      .filter((q) => q.startsWith(`${namespace}.`));
    await deleteNamespace(AMQP_URL, namespace, queues);
    for (const service of SERVICES) await dropDatabase(DATABASE_URL, namespacedDatabaseName(namespace, service));
  }
  latencies.sort((a, b) => a - b);
  return {
    mode,
    rate: RATE,
    uploads: total,
    completed: latencies.length,
    failures,
    silent,
    throughput: latencies.length / elapsed,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
    max: latencies.at(-1) ?? null,
  };
}

console.log(`latency benchmark: ${RATE} uploads/s for ${SECONDS} s, upload → jobCompleted through the gateway (all services in this process)`);
const results = [];
for (const mode of MODES) {
  const r = await run(mode);
  results.push(r);
  console.log(
    `${mode.padEnd(9)} completed ${r.completed}/${r.uploads} (failures ${r.failures}, silent ${r.silent})  p50 ${ms(r.p50)} ms  p95 ${ms(r.p95)} ms  p99 ${ms(r.p99)} ms  max ${ms(r.max)} ms  throughput ${r.throughput.toFixed(1)} jobs/s`,
  );
}
console.log(`wrote ${writeResult('latency', { settings: { rate: RATE, seconds: SECONDS }, results })}`);
