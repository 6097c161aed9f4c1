import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Headers, type Delivery, type QueueSpec, type Transport } from '../events/transport.ts';
import { waitFor } from './services.ts';

export interface TransportFixture {
  transport: Transport;
  /** Remove what the test declared (queues, exchange) and close. */
  cleanup(specs: QueueSpec[]): Promise<void>;
}

/** What each behaviour's check is given: the transport under test (a fresh one per test) and helpers that declare queues and make messages. */
interface ContractContext {
  readonly transport: Transport;
  /** A queue spec in the test's namespace, removed after the test. */
  spec(suffix: string, bindings: string[], extra?: Partial<QueueSpec>): QueueSpec;
  /** A message of a type, with a fresh id and `text` (default: random) as its body. */
  message(routingKey: string, text?: string): { routingKey: string; messageId: string; body: Buffer };
}

/**
 * The behaviour every {@link Transport} must have. Run it against each implementation, so the
 * in-memory bus can never drift from what RabbitMQ does. *(Hive Gateway pubsub, BullMQ)*
 */
export function describeTransportContract(name: string, create: (namespace: string) => Promise<TransportFixture>): void {
  describe(`transport contract: ${name}`, () => {
    let fixture: TransportFixture;
    let namespace: string;
    const specs: QueueSpec[] = [];

    beforeEach(async () => {
      namespace = `tc_${randomUUID().slice(0, 8)}`;
      fixture = await create(namespace);
      await fixture.transport.start();
    });
    afterEach(async () => {
      await fixture.cleanup(specs.splice(0));
    });

    const t: ContractContext = {
      get transport() {
        return fixture.transport;
      },
      spec: (suffix, bindings, extra = {}) => {
        const s: QueueSpec = { queue: `${namespace}.svc.${suffix}`, bindings, prefetch: 10, retryDelaysMs: [50, 100], ...extra };
        specs.push(s);
        return s;
      },
      message: (routingKey, text = randomUUID()) => ({ routingKey, messageId: randomUUID(), body: Buffer.from(text) }),
    };

    it('routes a message to every queue bound to its type and to no other', () => routesByBinding(t));
    it('matches topic wildcards in bindings', () => matchesWildcards(t));
    it('redelivers a message that was never acked when its consumer closes', () => redeliversUnacked(t));
    it('never has more unacked deliveries than the prefetch', () => keepsToPrefetch(t));
    it('retries through the delay tiers with the attempt count and failure in headers', () => retriesThroughTiers(t));
    it('dead-letters with the failure in headers, lists without removing, and replays with a fresh attempt count', () => deadLettersAndReplays(t));
    it('refuses to publish once closed, with a code', () => refusesOnceClosed(t));
  });
}

async function routesByBinding(t: ContractContext): Promise<void> {
  const a: Delivery[] = [];
  const b: Delivery[] = [];
  const c: Delivery[] = [];
  await t.transport.consume(t.spec('a', ['document.uploaded']), (d) => a.push(d));
  await t.transport.consume(t.spec('b', ['document.uploaded', 'analysis.completed']), (d) => b.push(d));
  await t.transport.consume(t.spec('c', ['job.updated']), (d) => c.push(d));
  await t.transport.publish([t.message('document.uploaded', 'one'), t.message('analysis.completed', 'two')]);
  await waitFor(() => a.length === 1 && b.length === 2, 5_000, 'deliveries');
  expect(a[0]!.body.toString()).toBe('one');
  expect(a[0]!.routingKey).toBe('document.uploaded');
  expect(a[0]!.attempt).toBe(1);
  expect(b.map((d) => d.body.toString()).sort()).toEqual(['one', 'two']);
  await new Promise((r) => setTimeout(r, 100));
  expect(c).toHaveLength(0);
  await Promise.all([...a, ...b].map((d) => d.ack()));
}

async function matchesWildcards(t: ContractContext): Promise<void> {
  const got: Delivery[] = [];
  await t.transport.consume(t.spec('w', ['analysis.*']), (d) => got.push(d));
  await t.transport.publish([t.message('analysis.failed'), t.message('analysis.completed'), t.message('document.uploaded')]);
  await waitFor(() => got.length === 2, 5_000, 'two analysis events');
  expect(got.map((d) => d.routingKey).sort()).toEqual(['analysis.completed', 'analysis.failed']);
  await Promise.all(got.map((d) => d.ack()));
}

async function redeliversUnacked(t: ContractContext): Promise<void> {
  const s = t.spec('r', ['job.updated']);
  const first: Delivery[] = [];
  const handle = await t.transport.consume(s, (d) => first.push(d));
  const sent = t.message('job.updated');
  await t.transport.publish([sent]);
  await waitFor(() => first.length === 1, 5_000, 'first delivery');
  expect(first[0]!.redelivered).toBe(false);
  await handle.close();
  const second: Delivery[] = [];
  await t.transport.consume(s, (d) => second.push(d));
  await waitFor(() => second.length === 1, 5_000, 'redelivery');
  expect(second[0]!.messageId).toBe(sent.messageId);
  expect(second[0]!.redelivered).toBe(true);
  await second[0]!.ack();
}

async function keepsToPrefetch(t: ContractContext): Promise<void> {
  const got: Delivery[] = [];
  await t.transport.consume(t.spec('p', ['job.updated'], { prefetch: 3 }), (d) => got.push(d));
  await t.transport.publish(Array.from({ length: 8 }, () => t.message('job.updated')));
  await waitFor(() => got.length === 3, 5_000, 'three deliveries');
  await new Promise((r) => setTimeout(r, 200));
  expect(got).toHaveLength(3);
  await got[0]!.ack();
  await waitFor(() => got.length === 4, 5_000, 'a fourth delivery after one ack');
  for (let i = 1; i < 8; i++) {
    await waitFor(() => got.length > i, 5_000, `delivery ${i + 1}`);
    await got[i]!.ack();
  }
  expect(got).toHaveLength(8);
}

async function retriesThroughTiers(t: ContractContext): Promise<void> {
  const got: Delivery[] = [];
  await t.transport.consume(t.spec('t', ['analysis.started'], { retryDelaysMs: [80, 160] }), (d) => got.push(d));
  const sent = t.message('analysis.started');
  await t.transport.publish([sent]);
  await waitFor(() => got.length === 1, 5_000, 'first delivery');
  const failedAt = Date.now();
  await got[0]!.retry(0, { code: 'BOOM', message: 'first failure' });
  await waitFor(() => got.length === 2, 5_000, 'retried delivery');
  expect(Date.now() - failedAt).toBeGreaterThanOrEqual(60);
  const retried = got[1]!;
  expect(retried.attempt).toBe(2);
  expect(retried.messageId).toBe(sent.messageId);
  expect(retried.routingKey).toBe('analysis.started');
  expect(retried.body.toString()).toBe(sent.body.toString());
  expect(retried.headers[Headers.errorCode]).toBe('BOOM');
  await retried.retry(5, { code: 'BOOM', message: 'second failure' }); // clamped to the last tier
  await waitFor(() => got.length === 3, 5_000, 'second retry');
  expect(got[2]!.attempt).toBe(3);
  await got[2]!.ack();
}

async function deadLettersAndReplays(t: ContractContext): Promise<void> {
  const s = t.spec('d', ['document.uploaded']);
  const got: Delivery[] = [];
  await t.transport.consume(s, (d) => got.push(d));
  const [one, two] = [t.message('document.uploaded', 'one'), t.message('document.uploaded', 'two')];
  await t.transport.publish([one, two]);
  await waitFor(() => got.length === 2, 5_000, 'deliveries');
  for (const d of got) await d.deadLetter({ code: 'CONTRACT', message: `bad ${d.body.toString()}` });
  await waitFor(async () => (await t.transport.listDeadLetters(s.queue, 10)).length === 2, 5_000, 'two dead letters');
  const listed = await t.transport.listDeadLetters(s.queue, 10);
  expect(listed.map((l) => l.messageId).sort()).toEqual([one.messageId, two.messageId].sort());
  expect(listed[0]!.headers[Headers.errorCode]).toBe('CONTRACT');
  expect(String(listed[0]!.headers[Headers.errorMessage])).toMatch(/^bad /);
  expect(listed[0]!.routingKey).toBe('document.uploaded');
  expect(await t.transport.listDeadLetters(s.queue, 10)).toHaveLength(2);

  expect(await t.transport.replayDeadLetters(s.queue, { messageIds: [two.messageId] })).toBe(1);
  await waitFor(() => got.length === 3, 5_000, 'replayed delivery');
  expect(got[2]!.messageId).toBe(two.messageId);
  expect(got[2]!.attempt).toBe(1);
  expect(got[2]!.routingKey).toBe('document.uploaded');
  await got[2]!.ack();
  const left = await t.transport.listDeadLetters(s.queue, 10);
  expect(left.map((l) => l.messageId)).toEqual([one.messageId]);
}

async function refusesOnceClosed(t: ContractContext): Promise<void> {
  await t.transport.close();
  await expect(t.transport.publish([t.message('job.updated')])).rejects.toMatchObject({ code: 'TRANSPORT_CLOSED' });
}
