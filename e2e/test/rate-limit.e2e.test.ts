import { setTimeout as sleep } from 'node:timers/promises';
/**
 * The upload rate limit shared over Redis (REDIS_URL): two gateway processes (and a third
 * gateway, in this process, failing closed) over one system and one Redis of this test's own,
 * which is then killed to show RATE_LIMIT_ON_REDIS_ERROR, and started again.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort, servicesAvailable, TEST_AMQP_URL, waitFor } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '@tributary/gateway';
import { startProcessSystem, TEST_SECRETS, type TestSystem } from './fixtures/system.ts';

const LIMIT = 5;
const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } } }';

/** Whether this machine can start a Redis of the test's own; with `CI=true` a missing one is a failure. */
function redisServerAvailable(): boolean {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0) return true;
  if (process.env.CI === 'true') throw new Error('CI=true but redis-server is not installed: the shared rate limit tests cannot run');
  console.warn('skipping the shared rate limit tests: no redis-server');
  return false;
}

/** A throwaway Redis on `port` that keeps nothing on disk; resolves once it answers. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const client = new Redis({ port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await waitFor(async () => (await client.connect().then(() => client.ping(), () => null)) === 'PONG', 10_000, `redis-server on ${port}`);
  } finally {
    client.disconnect();
  }
  return child;
}

async function stopRedis(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

const available = (await servicesAvailable()) && redisServerAvailable();

describe.skipIf(!available)('the upload rate limit shared over Redis', () => {
  let system: TestSystem;
  let redisPort: number;
  let redis: ChildProcess | undefined;
  /** A third gateway on the same Redis, with RATE_LIMIT_ON_REDIS_ERROR=deny. */
  let closed: RunningGateway;

  beforeAll(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    const shared = { REDIS_URL: `redis://127.0.0.1:${redisPort}`, UPLOAD_RATE_LIMIT_PER_MINUTE: String(LIMIT) };
    system = await startProcessSystem({ gatewayCount: 2, gatewayEnv: { ...shared, RATE_LIMIT_ON_REDIS_ERROR: 'allow' } });
    const { documents, jobs, analysis, insights, webhooks } = system.subgraphs;
    closed = await startGateway({
      port: 0,
      host: '127.0.0.1',
      env: {
        ...shared,
        RATE_LIMIT_ON_REDIS_ERROR: 'deny',
        NODE_ENV: 'test',
        LOG_LEVEL: 'error',
        AMQP_URL: TEST_AMQP_URL,
        TRIBUTARY_NAMESPACE: system.namespace!,
        AUTH_JWT_SECRET: TEST_SECRETS.auth,
        INTERNAL_SIGNING_SECRET: TEST_SECRETS.internal,
        ...{ DOCUMENTS_URL: documents!, JOBS_URL: jobs!, ANALYSIS_URL: analysis!, INSIGHTS_URL: insights! },
        SUBGRAPH_URLS: `webhooks=${webhooks!}`,
      },
    });
  }, 120_000);

  afterAll(async () => {
    await closed?.stop();
    await system?.stop();
    await stopRedis(redis);
  });

  const gateways = () => [...system.gateways, closed.url];
  async function upload(gateway: number, token: string, title: string) {
    const started = performance.now();
    const response = await fetch(gateways()[gateway]!, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: UPLOAD, variables: { input: { title, content: `text of ${title}` } } }),
    });
    const body = (await response.json()) as { data?: unknown; errors?: { message: string; extensions?: { code?: string; retryAfterSeconds?: number } }[] };
    return { status: response.status, error: body.errors?.[0], ms: performance.now() - started };
  }
  const metric = async (gateway: number, outcome: string) => {
    const text = await (await fetch(new URL('/metrics', gateways()[gateway]!))).text();
    const line = text.split('\n').find((l) => l.startsWith(`tributary_gateway_rate_limit_store_errors_total{outcome="${outcome}"}`));
    return line ? Number(line.split(' ').at(-1)) : 0;
  };

  it('allows exactly UPLOAD_RATE_LIMIT_PER_MINUTE uploads per user across the gateway processes, and leaves other users alone', async () => {
    const alice = await system.token({ tenant: 'tenant-r', sub: 'alice' });
    const bob = await system.token({ tenant: 'tenant-r', sub: 'bob' });
    const before = await system.count('documents', 'select count(*) as n from documents');
    const accepted = [];
    for (let i = 0; i < LIMIT; i++) accepted.push(await upload(i % 2, alice, `alice ${i}`));
    expect(accepted.map((r) => [r.status, r.error?.extensions?.code])).toEqual(Array.from({ length: LIMIT }, () => [200, undefined]));
    // The next one is refused on every gateway: the count is shared, not per process.
    for (const gateway of [1, 0, 2]) {
      const refused = await upload(gateway, alice, `alice over ${gateway}`);
      expect(refused.status, `gateway ${gateway}`).toBe(429);
      expect(refused.error, `gateway ${gateway}`).toMatchObject({ message: expect.stringMatching(/^upload rate limit exceeded; retry in \d+ s$/), extensions: { code: 'RATE_LIMITED' } });
      expect(refused.error?.extensions?.retryAfterSeconds).toBeGreaterThan(0);
      expect(refused.error?.extensions?.retryAfterSeconds).toBeLessThanOrEqual(60);
    }
    for (const gateway of [0, 1]) expect((await upload(gateway, bob, `bob ${gateway}`)).error).toBeUndefined();
    expect(await system.count('documents', 'select count(*) as n from documents')).toBe(before + LIMIT + 2);
  });

  it('with Redis stopped, lets uploads through where RATE_LIMIT_ON_REDIS_ERROR=allow and refuses them where it is deny, at once, counting both', async () => {
    const carol = await system.token({ tenant: 'tenant-r', sub: 'carol' });
    await stopRedis(redis);
    const allowed = async () => (await metric(0, 'allowed')) + (await metric(1, 'allowed'));
    const allowedBefore = await allowed();
    const deniedBefore = await metric(2, 'denied');
    // More than the limit: with nothing to count in, allow lets every one through.
    for (let i = 0; i <= LIMIT; i++) {
      const through = await upload(i % 2, carol, `carol ${i}`);
      expect([through.status, through.error?.extensions?.code]).toEqual([200, undefined]);
    }
    const denied = await upload(2, carol, 'carol denied');
    expect(denied.status).toBe(503);
    expect(denied.error).toMatchObject({ message: 'upload rate limit unavailable; retry later', extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 1 } });
    // Failed over, not waited on a connection (the whole request, on 2 shared cores).
    expect(denied.ms).toBeLessThan(1_000);
    expect((await allowed()) - allowedBefore).toBe(LIMIT + 1);
    expect(await metric(2, 'denied')).toBe(deniedBefore + 1);
  });

  it('counts again once Redis is back', async () => {
    redis = await startRedis(redisPort);
    const dave = await system.token({ tenant: 'tenant-r', sub: 'dave' });
    // ioredis reconnects within a second; until then deny refuses.
    await waitFor(async () => (await upload(2, dave, 'dave first')).status === 200, 15_000, 'the deny gateway to reach Redis again');
    // The allow gateways fail open while they reconnect, so their uploads would go uncounted: give
    // their clients (the same backoff as the deny gateway's) time to reconnect too.
    await sleep(3_000);
    const results = [];
    for (let i = 1; i <= LIMIT; i++) results.push((await upload(i % 2, dave, `dave ${i}`)).error?.extensions?.code);
    expect(results).toEqual([...Array.from({ length: LIMIT - 1 }, () => undefined), 'RATE_LIMITED']);
  });
});
