import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { EventBusKind } from '../config.ts';
import { freePort, TEST_AMQP_URL, TEST_NATS_URL, TEST_REDIS_URL } from './services.ts';

const run = promisify(execFile);

/** A broker a test can take down and bring back while a system runs on it. */
export interface TestBroker {
  kind: EventBusKind;
  url: string;
  /** Stop it, keeping its data (SIGTERM: Redis flushes its AOF, NATS its store). */
  stop(): Promise<void>;
  /** Start it again on the same port and data, and wait until it answers. */
  start(): Promise<void>;
  /** {@link stop}, wait `downMs`, {@link start}. */
  restart(downMs?: number): Promise<void>;
  /** Stop it for good and remove its data (nothing for the machine's shared RabbitMQ). */
  dispose(): Promise<void>;
}

/**
 * The machine's broker of a kind, for tests that only use it (the shared servers: 5672, 6379,
 * 4222). Not restartable: {@link startTestBroker} gives a broker of the test's own.
 */
export function sharedBrokerUrl(kind: EventBusKind): string {
  return kind === 'rabbitmq' ? TEST_AMQP_URL : kind === 'redis' ? TEST_REDIS_URL : TEST_NATS_URL;
}

/**
 * A broker the test may stop and start. Redis and NATS: a server of the test's own on a free
 * port, with its data in a temporary folder (Redis with the AOF fsynced on every write, as
 * docs/brokers.md asks of a deployment, or with `persistent: false` nothing on disk, so a restart
 * loses every key; NATS with JetStream's file store). RabbitMQ: the machine's broker, its
 * application stopped and started with `rabbitmqctl` (a second node would take a minute to boot
 * here); integration test files run one at a time, so no other test sees it down.
 */
export async function startTestBroker(kind: EventBusKind, options: { persistent?: boolean } = {}): Promise<TestBroker> {
  if (kind === 'rabbitmq') return sharedRabbitMq();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), `tributary-${kind}-`));
  const aof = options.persistent === false ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', 'always'];
  const args = kind === 'redis' ? ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, ...aof, '--save', ''] : ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir];
  const command = kind === 'redis' ? 'redis-server' : 'nats-server';
  let child: ChildProcess | undefined;
  const start = async () => {
    const started = spawn(command, args, { stdio: 'ignore' });
    child = started;
    await waitForPort(port, 15_000, () => started.exitCode !== null || started.signalCode !== null);
  };
  const stop = async () => {
    const current = child;
    child = undefined;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => current.kill('SIGKILL'), 10_000);
      current.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      current.kill('SIGTERM');
    });
  };
  await start();
  return testBroker(kind, kind === 'redis' ? `redis://127.0.0.1:${port}` : `nats://127.0.0.1:${port}`, stop, start, async () => {
    await stop();
    await rm(dir, { recursive: true, force: true });
  });
}

function testBroker(kind: EventBusKind, url: string, stop: () => Promise<void>, start: () => Promise<void>, dispose: () => Promise<void>): TestBroker {
  const restart = async (downMs = 2_000) => {
    await stop();
    await sleep(downMs);
    await start();
  };
  return { kind, url, stop, start, restart, dispose };
}

function sharedRabbitMq(): TestBroker {
  const stop = async () => void (await run('rabbitmqctl', ['-q', 'stop_app'], { timeout: 60_000 }));
  const start = async () => {
    await run('rabbitmqctl', ['-q', 'start_app'], { timeout: 120_000 });
    await run('rabbitmqctl', ['-q', 'await_startup'], { timeout: 120_000 });
  };
  return testBroker('rabbitmq', TEST_AMQP_URL, stop, start, async () => {});
}

async function waitForPort(port: number, timeoutMs: number, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited()) throw new Error(`the broker on port ${port} exited while starting`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`the broker did not listen on port ${port} within ${timeoutMs} ms`);
}
