import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createLogger } from '@tributary/core';
import { describeTransportContract, natsAvailable, startTestBroker, TEST_NATS_URL, testNamespace, waitFor, type TestBroker } from '@tributary/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { deleteNatsNamespace, NatsJetStreamTransport, type NatsTransportOptions } from '@tributary/core/events';
import { Headers, type Delivery, type QueueSpec } from '../src/events/transport.ts';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

const logger = createLogger({ service: 'test', level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const message = (routingKey: string, text: string = randomUUID()) => ({ routingKey, messageId: randomUUID(), body: Buffer.from(text) });

describe.skipIf(!(await natsAvailable()))('NATS JetStream transport', () => {
  describeTransportContract('nats', async (namespace) => {
    const transport = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace });
    return {
      transport,
      cleanup: async () => {
        await transport.close();
        await deleteNatsNamespace(TEST_NATS_URL, namespace);
      },
    };
  });
});

describe.skipIf(!(await natsAvailable()))('NATS JetStream transport: consumers', () => {
  const opened: NatsJetStreamTransport[] = [];
  const namespaces: string[] = [];
  const children: ChildProcess[] = [];
  const open = async (namespace: string, extra: Partial<NatsTransportOptions> = {}) => {
    const transport = new NatsJetStreamTransport({ url: TEST_NATS_URL, namespace, logger, connectionName: namespace, ...extra });
    opened.push(transport);
    await transport.start();
    return transport;
  };
  const fresh = () => {
    const namespace = testNamespace('nt');
    namespaces.push(namespace);
    return namespace;
  };
  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(opened.splice(0).map((t) => t.close()));
    for (const namespace of namespaces.splice(0)) await deleteNatsNamespace(TEST_NATS_URL, namespace);
  });

  it("hands a dead process's unacked deliveries to another process's consumer after ack_wait", async () => {
    const namespace = fresh();
    const ackWaitMs = 1_500;
    const transport = await open(namespace, { ackWaitMs });
    const spec: QueueSpec = { queue: `${namespace}.svc.shared`, bindings: ['job.updated'], prefetch: 10, retryDelaysMs: [100] };
    // The other process declares the durable and takes the deliveries, without settling them.
    const script = join(import.meta.dirname, 'fixtures', 'nats-holder.ts');
    const holder = spawn(process.execPath, ['--import', 'tsx', script, namespace, spec.queue, 'job.updated', String(ackWaitMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(holder);
    let out = '';
    holder.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await waitFor(() => out.includes('ready'), 20_000, 'the holder process');
    const sent = [message('job.updated'), message('job.updated')];
    await transport.publish(sent);
    await waitFor(() => sent.every((m) => out.includes(`got ${m.messageId}`)), 10_000, 'the holder to take both');

    const got: Delivery[] = [];
    await transport.consume(spec, (d) => got.push(d));
    // While the holder lives it keeps its deliveries (working()), past ack_wait.
    await new Promise((r) => setTimeout(r, ackWaitMs * 1.5));
    expect(got).toHaveLength(0);
    const killedAt = Date.now();
    holder.kill('SIGKILL');
    await waitFor(() => got.length === 2, 10_000, 'the dead process deliveries');
    expect(Date.now() - killedAt).toBeLessThan(ackWaitMs + 3_000);
    expect(got.map((d) => d.messageId).sort()).toEqual(sent.map((m) => m.messageId).sort());
    expect(got.every((d) => d.redelivered)).toBe(true);
    await Promise.all(got.map((d) => d.ack()));
    await waitFor(async () => (await transport.queueDepth(spec.queue)) === 0, 5_000, 'an empty queue');
  });

  it('shares a queue between processes consuming it (competing consumers), each message to one of them', async () => {
    const namespace = fresh();
    const one = await open(namespace);
    const two = await open(namespace);
    const spec: QueueSpec = { queue: `${namespace}.svc.shared`, bindings: ['job.updated'], prefetch: 2, retryDelaysMs: [100] };
    const byOne: string[] = [];
    const byTwo: string[] = [];
    // Slow handlers, so neither can take everything before the other asks.
    const slow = (into: string[]) => (d: Delivery) => void setTimeout(() => void d.ack().then(() => into.push(String(d.messageId))), 20);
    await one.consume(spec, slow(byOne));
    await two.consume(spec, slow(byTwo));
    const sent = Array.from({ length: 40 }, () => message('job.updated'));
    await one.publish(sent);
    await waitFor(() => byOne.length + byTwo.length === sent.length, 15_000, 'every message');
    expect(byOne.length).toBeGreaterThan(0);
    expect(byTwo.length).toBeGreaterThan(0);
    expect([...byOne, ...byTwo].sort()).toEqual(sent.map((m) => m.messageId).sort());
  });

  it('dead-letters a message delivered the delivery limit times without being settled', async () => {
    const namespace = fresh();
    const transport = await open(namespace, { deliveryLimit: 3 });
    const spec: QueueSpec = { queue: `${namespace}.svc.limit`, bindings: ['job.updated'], prefetch: 5, retryDelaysMs: [100] };
    const poison = message('job.updated', 'poison');
    const seen: Delivery[] = [];
    const take = (d: Delivery) => void seen.push(d);
    // Each consumer takes it and goes away without settling it (as a process that crashes on it would).
    let handle = await transport.consume(spec, take);
    await transport.publish([poison]);
    for (let round = 1; round <= 2; round++) {
      await waitFor(() => seen.length === round, 10_000, `delivery ${round}`);
      await handle.close();
      if (round < 2) handle = await transport.consume(spec, take);
    }
    expect(seen.map((d) => d.redelivered)).toEqual([false, true]);
    // The third delivery is the last JetStream makes: the transport dead-letters it instead of handing it out.
    handle = await transport.consume(spec, take);
    await waitFor(async () => (await transport.listDeadLetters(spec.queue, 10)).length === 1, 10_000, 'the dead letter');
    expect(seen).toHaveLength(2);
    const [letter] = await transport.listDeadLetters(spec.queue, 10);
    expect(letter!.messageId).toBe(poison.messageId);
    expect(letter!.headers[Headers.errorCode]).toBe('DELIVERY_LIMIT');
    expect(letter!.routingKey).toBe('job.updated');
    expect(await transport.queueDepth(`${spec.queue}.dlq`)).toBe(1);
    await handle.close();
  });

  it('takes several bindings on one queue, wildcards included, and nothing else', async () => {
    const namespace = fresh();
    const transport = await open(namespace);
    const spec: QueueSpec = { queue: `${namespace}.svc.multi`, bindings: ['document.uploaded', 'analysis.#', 'job.*.done'], prefetch: 2, retryDelaysMs: [100] };
    const got: Delivery[] = [];
    await transport.consume(spec, (d) => {
      got.push(d);
      void d.ack();
    });
    const wanted = [message('document.uploaded'), message('analysis'), message('analysis.completed'), message('analysis.step.failed'), message('job.x.done')];
    const others = [message('document.deleted'), message('job.done'), message('job.x.y.done'), message('analysisx.completed')];
    await transport.publish([...others.slice(0, 2), ...wanted, ...others.slice(2)]);
    await waitFor(() => got.length >= wanted.length, 10_000, 'the bound events');
    await waitFor(async () => (await transport.queueDepth(spec.queue)) === 0, 5_000, 'the others taken off the queue');
    await new Promise((r) => setTimeout(r, 200));
    expect(got.map((d) => d.routingKey).sort()).toEqual(wanted.map((m) => m.routingKey).sort());
  });

  it("declares an exclusive queue's consumer again when the server dropped it, and says so", async () => {
    const namespace = fresh();
    const transport = await open(namespace);
    const got: string[] = [];
    let resubscribed = 0;
    const spec: QueueSpec = { queue: `${namespace}.gw.instance`, bindings: ['job.updated'], prefetch: 5, retryDelaysMs: [], exclusive: true, onResubscribed: () => resubscribed++ };
    const handle = await transport.consume(spec, (d) => {
      got.push(d.body.toString());
      void d.ack();
    });
    await transport.publish([message('job.updated', 'before')]);
    await waitFor(() => got.length === 1, 5_000, 'the first delivery');
    // What inactive_threshold does to an ephemeral consumer whose connection was gone too long.
    const nc = await connect({ servers: TEST_NATS_URL });
    try {
      const jsm = await jetstreamManager(nc);
      const names = (await jsm.consumers.list(`${namespace}_events`).next()).map((c) => c.name);
      expect(names).toHaveLength(1);
      // 2.9.10 sometimes answers a delete with "unlinkat …: directory not empty" while the consumer writes its state: again.
      await waitFor(async () => jsm.consumers.delete(`${namespace}_events`, names[0]!).catch(() => false), 5_000, 'the consumer deleted');
    } finally {
      await nc.close();
    }
    await waitFor(() => resubscribed > 0, 15_000, 'onResubscribed');
    let n = 0;
    await waitFor(
      async () => {
        await transport.publish([message('job.updated', `after${n++}`)]);
        await new Promise((r) => setTimeout(r, 100));
        return got.some((t) => t.startsWith('after'));
      },
      15_000,
      'a delivery on the declared-again consumer',
    );
    await handle.close();
    const nc2 = await connect({ servers: TEST_NATS_URL });
    try {
      // Closing an exclusive queue deletes its consumers (well before inactive_threshold, 5 s, would).
      expect(await (await jetstreamManager(nc2)).consumers.list(`${namespace}_events`).next()).toHaveLength(0);
      expect(await (await jetstreamManager(nc2)).consumers.list(`${namespace}_retry`).next()).toHaveLength(0);
    } finally {
      await nc2.close();
    }
  });

  it('keeps the log off when asked: no transport.log, and queues still work', async () => {
    const namespace = fresh();
    const transport = await open(namespace, { log: false });
    expect(transport.log).toBeUndefined();
    const got: Delivery[] = [];
    await transport.consume({ queue: `${namespace}.svc.nolog`, bindings: ['job.updated'], prefetch: 5, retryDelaysMs: [50] }, (d) => {
      got.push(d);
      void d.ack();
    });
    await transport.publish([message('job.updated'), message('job.updated')]);
    await waitFor(() => got.length === 2, 5_000, 'deliveries without a log');
  });
});

describe.skipIf(!(await natsAvailable()))('NATS JetStream transport: server restart', () => {
  let server: TestBroker | undefined;
  afterEach(async () => {
    await server?.dispose();
    server = undefined;
  });

  it('loses nothing that was published and acked, and its consumers resume, across a server restart', async () => {
    server = await startTestBroker('nats');
    const namespace = testNamespace('nr');
    const transport = new NatsJetStreamTransport({ url: server.url, namespace, logger, connectionName: namespace, publishTimeoutMs: 1_500 });
    await transport.start();
    try {
      const durable: QueueSpec = { queue: `${namespace}.svc.durable`, bindings: ['job.updated'], prefetch: 20, retryDelaysMs: [100] };
      const received = new Set<string>();
      await transport.consume(durable, (d) => {
        received.add(String(d.messageId));
        void d.ack();
      });
      let resubscribed = 0;
      const live: string[] = [];
      await transport.consume({ queue: `${namespace}.gw.instance`, bindings: ['job.updated'], prefetch: 20, retryDelaysMs: [], exclusive: true, onResubscribed: () => resubscribed++ }, (d) => {
        live.push(String(d.messageId));
        void d.ack();
      });

      const confirmed: string[] = [];
      let failures = 0;
      let publishing = true;
      const publisher = (async () => {
        for (let i = 0; publishing; i++) {
          const batch = [message('job.updated', `m${i}`), message('job.updated', `m${i}b`)];
          try {
            await transport.publish(batch);
            confirmed.push(...batch.map((m) => m.messageId));
          } catch (error) {
            expect((error as { code?: string }).code).toBe('PUBLISH_TIMEOUT');
            failures++;
          }
          await new Promise((r) => setTimeout(r, 10));
        }
      })();

      await waitFor(() => confirmed.length >= 100 && received.size >= 50, 15_000, 'traffic before the restart');
      await server.stop();
      await waitFor(() => !transport.isReady(), 5_000, 'the transport to see the loss');
      const beforeRestart = confirmed.length;
      // While the server is down a publish waits its timeout (1.5 s here), then refuses with a code.
      const t0 = Date.now();
      await expect(transport.publish([message('job.updated', 'while down')])).rejects.toMatchObject({ code: 'PUBLISH_TIMEOUT' });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1_400);
      await new Promise((r) => setTimeout(r, 500));
      await server.start();
      await waitFor(() => transport.isReady(), 15_000, 'the reconnection');
      await waitFor(() => confirmed.length >= beforeRestart + 100, 20_000, 'publishes after the restart');
      publishing = false;
      await publisher;

      await waitFor(() => confirmed.every((id) => received.has(id)), 20_000, 'every confirmed message consumed');
      expect(failures).toBeGreaterThan(0);
      // The gateway instance's exclusive queue came back too, and said whether it had been lost.
      const lastConfirmed = confirmed.at(-1)!;
      await waitFor(() => live.includes(lastConfirmed), 20_000, 'the exclusive queue after the restart');
      console.log(`restart: ${confirmed.length} confirmed, ${failures} publishes refused while down, exclusive queue re-declared ${resubscribed} time(s)`);
    } finally {
      await transport.close();
      await deleteNatsNamespace(server.url, namespace).catch(() => {});
    }
  }, 90_000);
});
