import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@tributary/core';
import { describeTransportContract, freePort, redisAvailable, startTestBroker, TEST_REDIS_URL, testNamespace, waitFor, type TestBroker } from '@tributary/core/testing';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { deleteRedisNamespace, RedisStreamsTransport, type RedisTransportOptions } from '../src/events/redis.ts';
import { Headers, type Delivery, type QueueSpec } from '../src/events/transport.ts';
import { killRedisConnections } from './fixtures/redis-connections.ts';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const message = (routingKey = 'job.updated') => ({ routingKey, messageId: randomUUID(), body: Buffer.from(randomUUID()) });

describe.skipIf(!(await redisAvailable()))('Redis Streams transport', () => {
  describeTransportContract('redis', async (namespace) => {
    const transport = new RedisStreamsTransport({ url: TEST_REDIS_URL, namespace, logger, connectionName: namespace });
    return {
      transport,
      cleanup: async () => {
        await transport.close();
        await deleteRedisNamespace(TEST_REDIS_URL, namespace);
      },
    };
  });
});

describe.skipIf(!(await redisAvailable()))('Redis Streams transport: dead consumers, delivery limit, exclusive queues, restart', () => {
  const transports: RedisStreamsTransport[] = [];
  const children: ChildProcess[] = [];
  const namespaces: string[] = [];
  const servers: TestBroker[] = [];
  let admin: Redis | undefined;

  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const t of transports.splice(0)) await t.close();
    for (const ns of namespaces.splice(0)) await deleteRedisNamespace(TEST_REDIS_URL, ns);
    for (const s of servers.splice(0)) await s.dispose();
    admin?.disconnect();
    admin = undefined;
  });

  const namespace = () => {
    const ns = testNamespace('rt');
    namespaces.push(ns);
    return ns;
  };
  const transport = async (options: Partial<RedisTransportOptions> & { namespace: string }) => {
    const t = new RedisStreamsTransport({ url: TEST_REDIS_URL, logger, connectionName: options.namespace, ...options });
    transports.push(t);
    await t.start();
    return t;
  };
  const adminClient = () => (admin ??= new Redis(TEST_REDIS_URL));

  /** `fixtures/redis-process.ts`: a consumer in a process of its own that never settles; resolves once it consumes. */
  async function spawnConsumer(ns: string, queue: string, mode: 'hold' | 'exclusive', got: string[] = []): Promise<ChildProcess> {
    const script = fileURLToPath(new URL('./fixtures/redis-process.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, TEST_REDIS_URL, ns, queue, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line === 'ready') resolve();
        else if (line.startsWith('got ')) got.push(line.slice(4));
      });
      child.once('exit', (code, signal) => reject(new Error(`consumer process exited early (${code ?? signal})`)));
    });
    return child;
  }

  async function kill(child: ChildProcess): Promise<void> {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  it("takes over the entries a SIGKILLed consumer held and never acked (XAUTOCLAIM), as redelivered", async () => {
    const ns = namespace();
    const queue = `${ns}.svc.claim`;
    const held: string[] = [];
    const child = await spawnConsumer(ns, queue, 'hold', held);
    const publisher = await transport({ namespace: ns, log: false });
    const sent = [message(), message(), message()];
    await publisher.publish(sent);
    await waitFor(() => held.length === 3, 10_000, 'the doomed consumer to hold all three');
    await kill(child);

    const rescuer = await transport({ namespace: ns, log: false, consumerName: 'rescuer', claimMinIdleMs: 300, claimIntervalMs: 50 });
    const got: Delivery[] = [];
    await rescuer.consume({ queue, bindings: ['job.*'], prefetch: 10, retryDelaysMs: [50] }, (d) => got.push(d));
    await waitFor(() => got.length === 3, 10_000, 'the held entries taken over');
    expect(got.map((d) => d.messageId).sort()).toEqual(sent.map((m) => m.messageId).sort());
    expect(got.every((d) => d.redelivered)).toBe(true);
    await Promise.all(got.map((d) => d.ack()));
    const pending = (await adminClient().xpending(`${ns}:q:${queue}`, 'g')) as [number];
    expect(Number(pending[0])).toBe(0);
    expect(await adminClient().xlen(`${ns}:q:${queue}`)).toBe(0);
  });

  it('dead-letters an entry delivered more than the delivery limit, with DELIVERY_LIMIT', async () => {
    const ns = namespace();
    const t = await transport({ namespace: ns, log: false, deliveryLimit: 2 });
    const spec: QueueSpec = { queue: `${ns}.svc.limit`, bindings: ['job.updated'], prefetch: 5, retryDelaysMs: [50] };
    const sent = message();
    // Each consumer takes it and closes without settling: it stays pending, and the next reads it again.
    for (const attempt of [1, 2]) {
      const got: Delivery[] = [];
      const handle = await t.consume(spec, (d) => got.push(d));
      if (attempt === 1) await t.publish([sent]);
      await waitFor(() => got.length === 1, 5_000, `delivery ${attempt}`);
      expect(got[0]!.redelivered).toBe(attempt > 1);
      await handle.close();
    }
    const third: Delivery[] = [];
    const handle = await t.consume(spec, (d) => third.push(d));
    await waitFor(async () => (await t.listDeadLetters(spec.queue, 10)).length === 1, 5_000, 'the dead letter');
    const [dead] = await t.listDeadLetters(spec.queue, 10);
    expect(dead!.messageId).toBe(sent.messageId);
    expect(dead!.headers[Headers.errorCode]).toBe('DELIVERY_LIMIT');
    expect(third).toHaveLength(0);
    await handle.close();
  });

  it("keeps an exclusive queue while its owner lives, and drops it (binding and stream) once the owner dies without closing", async () => {
    const ns = namespace();
    const queue = `${ns}.gateway.instance-1`;
    const got: string[] = [];
    const child = await spawnConsumer(ns, queue, 'exclusive', got);
    const publisher = await transport({ namespace: ns, log: false });
    const redis = adminClient();
    // Alive: the owner refreshes its 500 ms binding, so it outlives several TTLs and keeps receiving.
    for (let i = 0; i < 8; i++) {
      await publisher.publish([message()]);
      await new Promise((r) => setTimeout(r, 150));
    }
    await waitFor(() => got.length === 8, 5_000, 'the owner to receive while alive');
    expect(await redis.hexists(`${ns}:bindings`, queue)).toBe(1);

    await kill(child);
    // Dead: the next publish after the TTL removes the binding and the queue's stream.
    await waitFor(
      async () => {
        await publisher.publish([message()]);
        return (await redis.hexists(`${ns}:bindings`, queue)) === 0;
      },
      5_000,
      'the dead owner’s binding to expire',
    );
    expect(await redis.exists(`${ns}:q:${queue}`)).toBe(0);

    // A graceful close removes it at once.
    const owner = await transport({ namespace: ns, log: false });
    const handle = await owner.consume({ queue, bindings: ['job.*'], prefetch: 5, retryDelaysMs: [], exclusive: true }, () => {});
    expect(await redis.hexists(`${ns}:bindings`, queue)).toBe(1);
    await handle.close();
    expect(await redis.hexists(`${ns}:bindings`, queue)).toBe(0);
  });

  it('loses nothing published and confirmed across a server restart (append-only file), and its consumer resumes', async () => {
    const server = await startTestBroker('redis');
    servers.push(server);
    const ns = testNamespace('rr');
    const t = new RedisStreamsTransport({ url: server.url, namespace: ns, logger, connectionName: ns, publishTimeoutMs: 2_000 });
    transports.push(t);
    await t.start();
    const received = new Set<string>();
    await t.consume({ queue: `${ns}.svc.restart`, bindings: ['job.*'], prefetch: 20, retryDelaysMs: [50] }, (d) => {
      received.add(d.messageId!);
      void d.ack().catch(() => {}); // an ack cut by the restart: redelivered, counted once by the set
    });

    const confirmed: string[] = [];
    const state: { phase: 'before' | 'down' | 'after' } = { phase: 'before' };
    const afterRestart: string[] = [];
    let publishing = true;
    const loop = (async () => {
      while (publishing) {
        const m = message();
        try {
          await t.publish([m]);
          confirmed.push(m.messageId);
          if (state.phase === 'after') afterRestart.push(m.messageId);
        } catch {
          // Not confirmed (the server was down): an outbox would keep the row and publish again.
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await waitFor(() => confirmed.length >= 100, 10_000, 'publishing before the restart');
    state.phase = 'down';
    await server.stop();
    await new Promise((r) => setTimeout(r, 300));
    await server.start();
    state.phase = 'after';
    await waitFor(() => afterRestart.length >= 100, 20_000, 'publishing after the restart');
    publishing = false;
    await loop;

    await waitFor(() => confirmed.every((id) => received.has(id)), 20_000, 'every confirmed message consumed');
    expect(afterRestart.every((id) => received.has(id))).toBe(true);
    // The log kept every confirmed message too.
    const logged = new Set<string>();
    await t.log!.read({ from: 'beginning' }, (e) => void logged.add(e.messageId!));
    expect(confirmed.filter((id) => !logged.has(id))).toEqual([]);
  }, 60_000);

  it('publishes and consumes again after its connections are cut', async () => {
    const ns = namespace();
    const t = await transport({ namespace: ns, log: false });
    const got: string[] = [];
    await t.consume({ queue: `${ns}.svc.cut`, bindings: ['job.*'], prefetch: 10, retryDelaysMs: [50] }, (d) => {
      got.push(d.messageId!);
      void d.ack();
    });
    const [before, after] = [message(), message()];
    await t.publish([before]);
    await waitFor(() => got.length === 1, 5_000, 'the first message');
    // The command connection and the consumer's own.
    expect(await killRedisConnections(TEST_REDIS_URL, ns)).toBeGreaterThanOrEqual(2);
    await t.publish([after]);
    await waitFor(() => got.includes(after.messageId), 10_000, 'a message after the cut');
    expect(got).toEqual([before.messageId, after.messageId]);
    expect(t.isReady()).toBe(true);
  });

  it('after a restart that lost every key: PUBLISH_TIMEOUT while down, then the queue is declared again and onResubscribed called', async () => {
    // No append-only file: the restart loses every key (groups, bindings, streams).
    const server = await startTestBroker('redis', { persistent: false });
    servers.push(server);
    const ns = testNamespace('rr');
    const t = new RedisStreamsTransport({ url: server.url, namespace: ns, logger, connectionName: ns, publishTimeoutMs: 300 });
    transports.push(t);
    await t.start();
    let resubscribed = 0;
    const got: string[] = [];
    const spec: QueueSpec = { queue: `${ns}.gateway.i1`, bindings: ['job.*'], prefetch: 10, retryDelaysMs: [50], exclusive: true, onResubscribed: () => resubscribed++ };
    await t.consume(spec, (d) => {
      got.push(d.messageId!);
      void d.ack();
    });
    const [before, after] = [message(), message()];
    await t.publish([before]);
    await waitFor(() => got.length === 1, 5_000, 'the first message');
    expect(resubscribed).toBe(0);

    await server.stop();
    await waitFor(() => !t.isReady(), 5_000, 'the transport to see the server gone');
    await expect(t.publish([message()])).rejects.toMatchObject({ code: 'PUBLISH_TIMEOUT' });
    await server.start();
    await waitFor(() => resubscribed === 1, 10_000, 'onResubscribed');
    await waitFor(() => t.isReady(), 5_000, 'ready again');
    await t.publish([after]);
    await waitFor(() => got.includes(after.messageId), 10_000, 'a message after the restart');
    expect(got).toEqual([before.messageId, after.messageId]);
    expect(resubscribed).toBe(1);
  }, 30_000);

  it('start() gives up with PUBLISH_TIMEOUT when no server answers within publishTimeoutMs', async () => {
    const port = await freePort();
    const t = new RedisStreamsTransport({ url: `redis://127.0.0.1:${port}`, namespace: testNamespace('rn'), logger, publishTimeoutMs: 400 });
    const started = Date.now();
    await expect(t.start()).rejects.toMatchObject({ code: 'PUBLISH_TIMEOUT' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    expect(t.isReady()).toBe(false);
    await expect(t.publish([message()])).rejects.toMatchObject({ code: 'TRANSPORT_CLOSED' });
  });
});
