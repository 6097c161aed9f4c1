/**
 * The system as deployed while its broker restarts with 200 uploads in flight, on each broker
 * Tributary runs on: every upload completes, and each document is analysed once (one claim of the
 * analysis worker, one count in the tenant's stats). The broker is one of the test's own
 * (`startTestBroker`: Redis with its AOF fsynced on every write, NATS with JetStream's file
 * store), or the machine's RabbitMQ with its application stopped and started.
 */
import type { EventBusKind } from '@tributary/core';
import { natsAvailable, redisAvailable, servicesAvailable, startTestBroker, waitFor, type TestBroker } from '@tributary/core/testing';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcessSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const UPLOADS = 200;

const available = await servicesAvailable();
const brokers: EventBusKind[] = ['rabbitmq', ...(available && (await redisAvailable()) ? (['redis'] as const) : []), ...(available && (await natsAvailable()) ? (['nats'] as const) : [])];

describe.skipIf(!available).each(brokers)('uploads while the broker restarts, as deployed on %s', (kind) => {
  let broker: TestBroker;
  let system: TestSystem;

  beforeAll(async () => {
    broker = await startTestBroker(kind);
    system = await startProcessSystem({ eventBusUrl: broker.url });
  }, 180_000);
  afterAll(async () => {
    await system?.stop().catch(() => {});
    await broker?.dispose();
  }, 60_000);

  it(`completes all ${UPLOADS} uploads in flight when it went down, each analysed once`, async () => {
    const tenant = `restart-${randomBytes(4).toString('hex')}`;
    const token = await system.token({ tenant });
    const send = async (n: number): Promise<string> => {
      const answer = await system.query<{ uploadDocument: { job: { id: string } } }>(UPLOAD, { input: { title: `In flight ${n}`, content: `Upload ${n}: revenue grew while the broker restarted.` } }, { token });
      expect(answer.errors, JSON.stringify(answer.errors)).toBeUndefined();
      return answer.data!.uploadDocument.job.id;
    };
    const completed = async () => {
      const { data } = await system.query<{ stats: { analyzed: number; failed: number } }>('{ stats { analyzed failed } }', {}, { token });
      return data?.stats;
    };
    // 200 uploads over 4 s; at 1 s the broker stops, stays down 3 s, and starts again. The uploads
    // themselves need no broker (the outbox keeps their events): all are accepted.
    let analyzedAtStop: number | undefined;
    const restart = sleep(1_000).then(async () => {
      analyzedAtStop = (await completed())?.analyzed;
      await broker.restart(3_000);
    });
    const sent: Promise<string>[] = [];
    for (let n = 0; n < UPLOADS; n++) {
      sent.push(send(n));
      await sleep(20);
    }
    const jobs = await Promise.all(sent);
    await restart;
    expect(new Set(jobs).size).toBe(UPLOADS);
    // The broker went down with most of the work still to do.
    expect(analyzedAtStop).toBeLessThan(UPLOADS / 2);
    await waitFor(async () => (await completed())?.analyzed === UPLOADS, 120_000, `the ${UPLOADS} analyses`);
    const statuses = await Promise.all(jobs.map(async (id) => (await system.query<{ job: { status: string } | null }>('query($id: ID!) { job(id: $id) { status } }', { id }, { token })).data?.job?.status));
    expect(statuses.filter((s) => s !== 'COMPLETED')).toEqual([]);
    // Once each: one claim per document, and the stats counted each once (not more, a moment later).
    await sleep(1_000);
    expect(await completed()).toEqual({ analyzed: UPLOADS, failed: 0 });
    expect(await system.count('analysis', `select count(*) as n from analyses where tenant_id = '${tenant}' and status = 'COMPLETED'`)).toBe(UPLOADS);
    expect(await system.count('analysis', `select count(*) as n from analyses where tenant_id = '${tenant}' and attempts <> 1`)).toBe(0);
  }, 240_000);
});
