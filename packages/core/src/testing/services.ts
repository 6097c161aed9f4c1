import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createConnection } from 'node:net';
import { promisify } from 'node:util';

/** Where tests find PostgreSQL and RabbitMQ. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
/** Where tests find Redis. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Where tests find NATS with JetStream. */
export const TEST_NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: u.hostname, port: Number(u.port || defaultPort) });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Whether PostgreSQL and RabbitMQ answer. With `CI=true` a missing service is a failure, not a
 * skip: a CI run that silently skipped its integration tests would prove nothing.
 * Use as `describe.skipIf(!(await servicesAvailable()))`.
 */
export async function servicesAvailable(): Promise<boolean> {
  const [postgres, rabbit] = await Promise.all([reachable(TEST_DATABASE_URL, 5432), reachable(TEST_AMQP_URL, 5672)]);
  if (postgres && rabbit) return true;
  const missing = [!postgres && `PostgreSQL (${TEST_DATABASE_URL})`, !rabbit && `RabbitMQ (${TEST_AMQP_URL})`].filter(Boolean).join(' and ');
  if (process.env.CI === 'true') throw new Error(`CI=true but ${missing} is not reachable: integration tests cannot run`);
  console.warn(`skipping integration tests: ${missing} not reachable`);
  return false;
}

/** Whether Redis answers; as {@link servicesAvailable}, a failure with `CI=true`. */
export async function redisAvailable(): Promise<boolean> {
  if (await reachable(TEST_REDIS_URL, 6379)) return true;
  if (process.env.CI === 'true') throw new Error(`CI=true but Redis (${TEST_REDIS_URL}) is not reachable: its integration tests cannot run`);
  console.warn(`skipping Redis tests: ${TEST_REDIS_URL} not reachable`);
  return false;
}

/** Whether NATS answers; as {@link servicesAvailable}, a failure with `CI=true`. */
export async function natsAvailable(): Promise<boolean> {
  if (await reachable(TEST_NATS_URL, 4222)) return true;
  if (process.env.CI === 'true') throw new Error(`CI=true but NATS (${TEST_NATS_URL}) is not reachable: its integration tests cannot run`);
  console.warn(`skipping NATS tests: ${TEST_NATS_URL} not reachable`);
  return false;
}

/** A name prefix of our own for queues, exchanges and databases: tests never collide. */
export function testNamespace(prefix = 't'): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

const run = promisify(execFile);

/**
 * Force-close, on the broker, every connection whose name starts with `prefix`
 * (like `rabbitmqctl close_all_connections`, limited to this test's connections so test files
 * running at the same time are not hit).
 */
export async function closeBrokerConnections(prefix: string): Promise<number> {
  const { stdout } = await run('rabbitmqctl', ['-q', 'list_connections', 'pid', 'client_properties'], { timeout: 30_000 });
  const pids: string[] = [];
  for (const line of stdout.split('\n')) {
    const pid = /^(<[^>]+>)/.exec(line)?.[1];
    const name = /"connection_name","([^"]*)"/.exec(line)?.[1] ?? /\{<<"connection_name">>,longstr,<<"([^"]*)">>\}/.exec(line)?.[1];
    if (pid && name?.startsWith(prefix)) pids.push(pid);
  }
  for (const pid of pids) await run('rabbitmqctl', ['-q', 'close_connection', pid, 'test: forced close'], { timeout: 30_000 });
  return pids.length;
}

/** Resolve when `predicate` holds, polling; reject with `message` after `timeoutMs`. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, message = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A TCP port that was free a moment ago (for child processes that need a fixed port). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Queue names on the broker that start with `prefix` (via rabbitmqctl). */
export async function brokerQueues(prefix: string): Promise<string[]> {
  const { stdout } = await run('rabbitmqctl', ['-q', 'list_queues', 'name'], { timeout: 30_000 });
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((name) => name.startsWith(prefix));
}

/** The most of `times` (ms) inside any window of `windowMs`: what a sliding-window limit bounds. */
export function busiestWindow(times: readonly number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  let start = 0;
  for (let end = 0; end < sorted.length; end++) {
    while (sorted[end]! - sorted[start]! >= windowMs) start++;
    most = Math.max(most, end - start + 1);
  }
  return most;
}
