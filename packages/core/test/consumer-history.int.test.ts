import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventConsumer } from '../src/events/consumer.ts';
import type { RabbitMqTransport } from '../src/events/rabbitmq.ts';
import { servicesAvailable, waitFor } from '../src/testing/services.ts';
import { effectStats, recordEffect, uploadedEvent } from './fixtures/effects.ts';
import { Harness, silent } from './fixtures/harness.ts';

function wireEvent() {
  const e = uploadedEvent();
  const id = randomUUID();
  const envelope = { id, type: e.type, source: 'test', specversion: '1.0', time: new Date().toISOString(), dataschema: 'document.uploaded/v1', subject: e.subject, tenantid: 'tenant-a', data: e.data };
  return { routingKey: 'document.uploaded', messageId: id, body: Buffer.from(JSON.stringify(envelope)) };
}

async function publishMany(transport: RabbitMqTransport, n: number): Promise<void> {
  for (let i = 0; i < n; i += 100) await transport.publish(Array.from({ length: Math.min(100, n - i) }, wireEvent));
}

describe.skipIf(!(await servicesAvailable()))('a late joiner on RabbitMQ and PostgreSQL', () => {
  let h: Harness;
  let child: ChildProcess | undefined;
  beforeEach(() => {
    h = new Harness();
  });
  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await h.cleanup();
  });

  /** `fixtures/history-process.ts`: the late joiner in a process of its own; resolves when it has started. */
  async function spawnLateJoiner(): Promise<ChildProcess> {
    const script = fileURLToPath(new URL('./fixtures/history-process.ts', import.meta.url));
    const started = spawn(process.execPath, ['--import', 'tsx', script, h.target.dbName, h.namespace], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: started.stdout! }).on('line', (line) => line === 'ready' && resolve());
      started.once('exit', (code, signal) => reject(new Error(`late joiner exited early (${code ?? signal})`)));
    });
    return started;
  }

  it('resumes from its checkpoint after being SIGKILLed mid-history, and applies every event once', async () => {
    const transport = await h.transport();
    const db = await h.db();
    await publishMany(transport, 2_000);
    child = await spawnLateJoiner();
    h.queues.push({ queue: `${h.namespace}.test.late`, retryDelaysMs: [50] });
    await waitFor(async () => (await effectStats(db)).rows >= 400, 60_000, 'part of the history applied');
    child.kill('SIGKILL');
    await new Promise((resolve) => child!.once('exit', resolve));
    const [checkpoint] = await db.fork().execute<{ last_offset: string; done: boolean }[]>('select last_offset, done from tributary_log_checkpoint');
    expect(checkpoint!.done).toBe(false);
    expect(Number(checkpoint!.last_offset)).toBeGreaterThan(0);
    // Published while nothing consumes: only the queue bound by the first start keeps them for the live part.
    await publishMany(transport, 200);
    const before = (await effectStats(db)).rows;
    expect(before).toBeLessThan(2_000);

    let applied = 0;
    const consumer = new EventConsumer({ service: 'test', name: 'late', types: ['document.uploaded'], startFrom: 'beginning', handler: recordEffect, db, transport, logger: silent, retryDelaysMs: [50], onApplied: (n) => (applied += n) });
    await consumer.start();
    await consumer.caughtUp();
    await publishMany(transport, 100);
    await waitFor(async () => (await effectStats(db)).rows >= 2_300, 60_000, 'every event applied');
    await waitFor(async () => (await transport.queueDepth(consumer.queue)) === 0, 20_000, 'queue drained');
    await new Promise((r) => setTimeout(r, 300));
    await consumer.stop();
    // One effect row per application: a second application of any event would show as a second row.
    expect(await effectStats(db)).toEqual({ rows: 2_300, distinct: 2_300 });
    expect(applied).toBe(2_300 - before);
    const [inbox] = await db.fork().execute<{ n: string }[]>("select count(*) as n from tributary_inbox where consumer = 'test.late'");
    expect(Number(inbox!.n)).toBe(2_300);
    const [done] = await db.fork().execute<{ done: boolean }[]>('select done from tributary_log_checkpoint');
    expect(done!.done).toBe(true);
  });
});
