import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventConsumer } from '@tributary/core/events';
import { servicesAvailable } from '@tributary/core/testing';
import { collect, startEmbeddedSystem, type GraphQLResponse, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const JOB_COMPLETED = 'subscription($id: ID!) { jobCompleted(jobId: $id) { id status document { analysis { summary } } } }';
const JOB_UPDATED = 'subscription($id: ID!) { jobUpdated(jobId: $id) { id status } }';
const TEXT = 'Quarterly revenue grew in every region while support tickets about onboarding fell sharply.';
const UPLOADS = 200;

const available = await servicesAvailable();
const modes: [string, boolean][] = [
  ['embedded defaults (pnpm dev)', false],
  ['one process on PostgreSQL and RabbitMQ', true],
];

/** Every message of a subscription, as they come, and whether the server completed it. */
function watch(client: Client, query: string, id: string) {
  const messages: GraphQLResponse[] = [];
  const done = new Promise<void>((resolve, reject) => {
    client.subscribe({ query, variables: { id } }, { next: (m) => void messages.push(m as GraphQLResponse), error: reject, complete: resolve });
  });
  return { messages, done };
}

describe.skipIf(!available).each(modes)('a job view far behind its events, %s', (_name, realServices) => {
  let system: TestSystem & { services: { name: string; consumers: readonly EventConsumer[] }[] };
  let jobView: EventConsumer;
  beforeAll(async () => {
    system = await startEmbeddedSystem({ realServices });
    jobView = system.services.find((s) => s.name === 'jobs')!.consumers.find((c) => c.queue.endsWith('.job-view'))!;
    expect(jobView).toBeDefined();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('never calls an uploaded job NOT_FOUND, and gives each subscriber exactly one jobCompleted once the view catches up', async () => {
    await jobView.stop();
    const ids: string[] = [];
    for (let i = 0; i < UPLOADS; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, UPLOADS - i) }, (_, k) => system.query<{ uploadDocument: { job: { id: string } } }>(UPLOAD, { input: { title: `Backlog ${i + k}`, content: `${TEXT} Number ${i + k}.` } })),
      );
      for (const response of batch) {
        expect(response.errors).toBeUndefined();
        ids.push(response.data!.uploadDocument.job.id);
      }
    }
    // The view has none of them; the job is still there, as it was uploaded.
    expect(await system.count('jobs', 'select count(*) as n from jobs')).toBe(0);
    const read = await system.query('query($id: ID!) { job(id: $id) { id status attempts createdAt updatedAt completedAt document { id } } }', { id: ids[0] });
    expect(read.errors).toBeUndefined();
    expect(read.data.job).toMatchObject({ id: ids[0], status: 'QUEUED', attempts: 0, completedAt: null });
    expect(read.data.job.updatedAt).toBe(read.data.job.createdAt);
    const byDocument = await system.query('query($id: ID!) { document(id: $id) { createdAt job { createdAt } } }', { id: read.data.job.document.id });
    expect(byDocument.data.document.job.createdAt).toBe(byDocument.data.document.createdAt);

    const client = system.ws();
    const completed = ids.map((id) => watch(client, JOB_COMPLETED, id));
    const updated = ids.slice(0, 20).map((id) => watch(client, JOB_UPDATED, id));
    // However long the backlog lasts, nobody is told the job does not exist.
    await new Promise((r) => setTimeout(r, 3_000));
    for (const s of [...completed, ...updated]) expect(s.messages).toEqual([]);
    // The backlog shows: every upload's event (and its analysis.started) waits for the view.
    const scrape = await (await fetch(new URL('/metrics', system.subgraphs.jobs))).text();
    const backlog = Number(/^tributary_consumer_backlog\{service="jobs",consumer="job-view"\} (\d+)$/m.exec(scrape)?.[1]);
    expect(backlog).toBeGreaterThanOrEqual(UPLOADS);
    expect(scrape).toMatch(/^tributary_consumer_oldest_event_age_seconds\{service="jobs",consumer="job-view"\} /m);

    await jobView.start();
    await Promise.all(completed.map((s) => s.done));
    await Promise.all(updated.map((s) => s.done));
    for (const [i, s] of completed.entries()) {
      expect(s.messages).toHaveLength(1);
      expect(s.messages[0]!.errors).toBeUndefined();
      expect(s.messages[0]!.data.jobCompleted).toMatchObject({ id: ids[i], status: 'COMPLETED' });
      expect(s.messages[0]!.data.jobCompleted.document.analysis.summary.length).toBeGreaterThan(0);
    }
    for (const s of updated) {
      const statuses = s.messages.map((m) => m.data.jobUpdated.status);
      // From the QUEUED state read at subscription: changes only, ending COMPLETED.
      expect(statuses.at(-1)).toBe('COMPLETED');
      expect(statuses).not.toContain('QUEUED');
      expect(new Set(statuses).size).toBe(statuses.length);
    }
  }, 240_000);

  it('answers NOT_FOUND within a second for ids that were never created, of either UUID version or none', async () => {
    for (const id of [randomUUID(), uuidv7(), 'not-a-uuid']) {
      const started = performance.now();
      const [completed, updated] = await Promise.all([collect(system.ws(), JOB_COMPLETED, { id }, 5_000), collect(system.ws(), JOB_UPDATED, { id }, 5_000)]);
      expect(performance.now() - started).toBeLessThan(1_000);
      for (const messages of [completed, updated]) {
        expect(messages).toHaveLength(1);
        expect(messages[0]!.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
      }
      const read = await system.query('query($id: ID!) { job(id: $id) { status } }', { id });
      expect(read).toEqual({ data: { job: null } });
    }
  });

  it("does not vouch for another tenant's job", async () => {
    const response = await system.query<{ uploadDocument: { job: { id: string } } }>(UPLOAD, { input: { title: 'Private', content: TEXT } });
    const id = response.data!.uploadDocument.job.id;
    const other = await system.token({ tenant: 'tenant-b' });
    expect(await system.query('query($id: ID!) { job(id: $id) { status } }', { id }, { token: other })).toEqual({ data: { job: null } });
    const messages = await collect(system.ws({ token: other }), JOB_COMPLETED, { id }, 5_000);
    expect(messages[0]!.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });
});
