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
  /** Stop the broker, wait `downMs`, start it again on the same data, and wait until it answers. */
  restart(downMs?: number): Promise<void>;
  /** Stop it for good and remove its data (nothing for the machine's shared RabbitMQ). */
  stop(): Promise<void>;
}

/**
 * The machine's broker of a kind, for tests that only use it (the shared servers: 5672, 6379,
 * 4222). Not restartable: {@link startTestBroker} gives a broker of the test's own.
 */
export function sharedBrokerUrl(kind: EventBusKind): string {
  return kind === 'rabbitmq' ? TEST_AMQP_URL : kind === 'redis' ? TEST_REDIS_URL : TEST_NATS_URL;
}

/**
 * A broker the test may restart. Redis and NATS: a server of the test's own on a free port, with
 * its data in a temporary folder (Redis with the AOF fsynced on every write, as docs/operations.md
 * asks of a deployment; NATS with JetStream's file store). RabbitMQ: the machine's broker, its
 * application stopped and started with `rabbitmqctl` (a second node would take a minute to boot
 * here); integration test files run one at a time, so no other test sees it down.
 */
export async function startTestBroker(kind: EventBusKind): Promise<TestBroker> {
  if (kind === 'rabbitmq') return sharedRabbitMq();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), `tributary-${kind}-`));
  const args =
    kind === 'redis'
      ? ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '']
      : ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir];
  const command = kind === 'redis' ? 'redis-server' : 'nats-server';
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(command, args, { stdio: 'ignore' });
    const started = child;
    await waitForPort(port, 15_000, () => started.exitCode !== null || started.signalCode !== null);
  };
  const halt = async () => {
    const current = child;
    child = undefined;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    // SIGTERM: Redis flushes its AOF and NATS its store, as on a planned restart.
    await new Promise<void>((resolve) => {
      current.once('exit', () => resolve());
      current.kill('SIGTERM');
    });
  };
  await start();
  return {
    kind,
    url: kind === 'redis' ? `redis://127.0.0.1:${port}` : `nats://127.0.0.1:${port}`,
    restart: async (downMs = 2_000) => {
      await halt();
      await sleep(downMs);
      await start();
    },
    stop: async () => {
      await halt();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function sharedRabbitMq(): TestBroker {
  return {
    kind: 'rabbitmq',
    url: TEST_AMQP_URL,
    restart: async (downMs = 2_000) => {
      await run('rabbitmqctl', ['-q', 'stop_app'], { timeout: 60_000 });
      await sleep(downMs);
      await run('rabbitmqctl', ['-q', 'start_app'], { timeout: 120_000 });
      await run('rabbitmqctl', ['-q', 'await_startup'], { timeout: 120_000 });
    },
    stop: async () => {},
  };
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
