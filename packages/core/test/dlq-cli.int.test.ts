import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runDlqCli } from '../src/cli/dlq.ts';
import { EventConsumer } from '../src/events/consumer.ts';
import { servicesAvailable, TEST_AMQP_URL, waitFor } from '../src/testing/services.ts';
import { effectStats, recordEffect, uploadedEvent } from './fixtures/effects.ts';
import { Harness, silent } from './fixtures/harness.ts';

describe.skipIf(!(await servicesAvailable()))('dlq CLI', () => {
  let h: Harness;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(async () => {
    await h.cleanup();
  });

  it('lists, inspects and replays dead-lettered events', async () => {
    const transport = await h.transport();
    let broken = true;
    const consumer = new EventConsumer({
      service: 'test',
      name: 'effects',
      types: ['document.uploaded'],
      db: await h.db(),
      transport,
      logger: silent,
      maxAttempts: 1,
      handler: async (event, context) => {
        if (broken) throw Object.assign(new Error('view table locked'), { code: 'LOCKED' });
        await recordEffect(event, context);
      },
    });
    h.queues.push({ queue: consumer.queue, retryDelaysMs: consumer.retryDelaysMs });
    await consumer.start();
    const e = uploadedEvent();
    const id = randomUUID();
    await transport.publish([
      {
        routingKey: e.type,
        messageId: id,
        body: Buffer.from(JSON.stringify({ id, type: e.type, source: 't', specversion: '1.0', time: new Date().toISOString(), dataschema: 'document.uploaded/v1', subject: e.subject, tenantid: 'tenant-a', data: e.data })),
      },
    ]);
    await waitFor(async () => (await transport.listDeadLetters(consumer.queue, 5)).length === 1, 10_000, 'a dead letter');

    const env = { AMQP_URL: TEST_AMQP_URL, TRIBUTARY_NAMESPACE: h.namespace };
    const lines: string[] = [];
    const out = (l: string) => lines.push(l);
    expect(await runDlqCli(['list', 'test.effects', '--json'], env, out)).toBe(0);
    const listed = JSON.parse(lines.pop()!);
    expect(listed).toEqual([expect.objectContaining({ messageId: id, type: 'document.uploaded', errorCode: 'LOCKED', errorMessage: 'view table locked', attempts: 1, tenant: 'tenant-a' })]);

    expect(await runDlqCli(['inspect', 'test.effects', id], env, out)).toBe(0);
    expect(JSON.parse(lines.pop()!).event.data.documentId).toBe(e.data.documentId);
    expect(await runDlqCli(['inspect', 'test.effects', randomUUID()], env, out)).toBe(1);

    expect(await runDlqCli(['replay', 'test.effects'], env, out)).toBe(2); // needs --id or --all
    broken = false;
    expect(await runDlqCli(['replay', 'test.effects', '--id', id], env, out)).toBe(0);
    expect(lines.pop()).toMatch(/^replayed 1 event from/);
    await waitFor(async () => (await effectStats(await h.db())).rows === 1, 10_000, 'the replayed effect');
    expect(await runDlqCli(['replay', 'test.effects', '--all'], env, out)).toBe(1);
  });

  it('reports bad usage and missing configuration with exit code 2', async () => {
    const lines: string[] = [];
    expect(await runDlqCli(['frobnicate'], {}, (l) => lines.push(l))).toBe(2);
    expect(await runDlqCli(['list', 'a.b'], {}, (l) => lines.push(l))).toBe(2);
    expect(lines.pop()).toMatch(/EVENT_BUS_URL: required \(or AMQP_URL\)/);
    expect(await runDlqCli(['list', 'a.b', '--limit', 'x'], { AMQP_URL: TEST_AMQP_URL }, (l) => lines.push(l))).toBe(2);
  });
});
