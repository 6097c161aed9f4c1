import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Headers, type Delivery, type QueueSpec, type Transport } from '../events/transport.ts';
import { waitFor } from './services.ts';

export interface TransportFixture {
  transport: Transport;
  /** Remove what the test declared (queues, exchange) and close. */
  cleanup(specs: QueueSpec[]): Promise<void>;
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

    const spec = (suffix: string, bindings: string[], extra: Partial<QueueSpec> = {}): QueueSpec => {
      const s: QueueSpec = { queue: `${namespace}.svc.${suffix}`, bindings, prefetch: 10, retryDelaysMs: [50, 100], ...extra };
      specs.push(s);
      return s;
    };
    const message = (routingKey: string, text: string = randomUUID()) => ({ routingKey, messageId: randomUUID(), body: Buffer.from(text) });

    it('routes a message to every queue bound to its type and to no other', async () => {
      const a: Delivery[] = [];
      const b: Delivery[] = [];
      const c: Delivery[] = [];
      await fixture.transport.consume(spec('a', ['document.uploaded']), (d) => a.push(d));
      await fixture.transport.consume(spec('b', ['document.uploaded', 'analysis.completed']), (d) => b.push(d));
      await fixture.transport.consume(spec('c', ['job.updated']), (d) => c.push(d));
      await fixture.transport.publish([message('document.uploaded', 'one'), message('analysis.completed', 'two')]);
      await waitFor(() => a.length === 1 && b.length === 2, 5_000, 'deliveries');
      expect(a[0]!.body.toString()).toBe('one');
      expect(a[0]!.routingKey).toBe('document.uploaded');
      expect(a[0]!.attempt).toBe(1);
      expect(b.map((d) => d.body.toString()).sort()).toEqual(['one', 'two']);
      await new Promise((r) => setTimeout(r, 100));
      expect(c).toHaveLength(0);
      await Promise.all([...a, ...b].map((d) => d.ack()));
    });

    it('matches topic wildcards in bindings', async () => {
      const got: Delivery[] = [];
      await fixture.transport.consume(spec('w', ['analysis.*']), (d) => got.push(d));
      await fixture.transport.publish([message('analysis.failed'), message('analysis.completed'), message('document.uploaded')]);
      await waitFor(() => got.length === 2, 5_000, 'two analysis events');
      expect(got.map((d) => d.routingKey).sort()).toEqual(['analysis.completed', 'analysis.failed']);
      await Promise.all(got.map((d) => d.ack()));
    });

    it('redelivers a message that was never acked when its consumer closes', async () => {
      const s = spec('r', ['job.updated']);
      const first: Delivery[] = [];
      const handle = await fixture.transport.consume(s, (d) => first.push(d));
      const sent = message('job.updated');
      await fixture.transport.publish([sent]);
      await waitFor(() => first.length === 1, 5_000, 'first delivery');
      expect(first[0]!.redelivered).toBe(false);
      await handle.close();
      const second: Delivery[] = [];
      await fixture.transport.consume(s, (d) => second.push(d));
      await waitFor(() => second.length === 1, 5_000, 'redelivery');
      expect(second[0]!.messageId).toBe(sent.messageId);
      expect(second[0]!.redelivered).toBe(true);
      await second[0]!.ack();
    });

    it('never has more unacked deliveries than the prefetch', async () => {
      const got: Delivery[] = [];
      await fixture.transport.consume(spec('p', ['job.updated'], { prefetch: 3 }), (d) => got.push(d));
      await fixture.transport.publish(Array.from({ length: 8 }, () => message('job.updated')));
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
    });

    it('retries through the delay tiers with the attempt count and failure in headers', async () => {
      const got: Delivery[] = [];
      await fixture.transport.consume(spec('t', ['analysis.started'], { retryDelaysMs: [80, 160] }), (d) => got.push(d));
      const sent = message('analysis.started');
      await fixture.transport.publish([sent]);
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
    });

    it('dead-letters with the failure in headers, lists without removing, and replays with a fresh attempt count', async () => {
      const s = spec('d', ['document.uploaded']);
      const got: Delivery[] = [];
      await fixture.transport.consume(s, (d) => got.push(d));
      const [one, two] = [message('document.uploaded', 'one'), message('document.uploaded', 'two')];
      await fixture.transport.publish([one, two]);
      await waitFor(() => got.length === 2, 5_000, 'deliveries');
      for (const d of got) await d.deadLetter({ code: 'CONTRACT', message: `bad ${d.body.toString()}` });
      await waitFor(async () => (await fixture.transport.listDeadLetters(s.queue, 10)).length === 2, 5_000, 'two dead letters');
      const listed = await fixture.transport.listDeadLetters(s.queue, 10);
      expect(listed.map((l) => l.messageId).sort()).toEqual([one.messageId, two.messageId].sort());
      expect(listed[0]!.headers[Headers.errorCode]).toBe('CONTRACT');
      expect(String(listed[0]!.headers[Headers.errorMessage])).toMatch(/^bad /);
      expect(listed[0]!.routingKey).toBe('document.uploaded');
      expect(await fixture.transport.listDeadLetters(s.queue, 10)).toHaveLength(2);

      expect(await fixture.transport.replayDeadLetters(s.queue, { messageIds: [two.messageId] })).toBe(1);
      await waitFor(() => got.length === 3, 5_000, 'replayed delivery');
      expect(got[2]!.messageId).toBe(two.messageId);
      expect(got[2]!.attempt).toBe(1);
      expect(got[2]!.routingKey).toBe('document.uploaded');
      await got[2]!.ack();
      const left = await fixture.transport.listDeadLetters(s.queue, 10);
      expect(left.map((l) => l.messageId)).toEqual([one.messageId]);
    });

    it('refuses to publish once closed, with a code', async () => {
      await fixture.transport.close();
      await expect(fixture.transport.publish([message('job.updated')])).rejects.toMatchObject({ code: 'TRANSPORT_CLOSED' });
    });
  });
}
