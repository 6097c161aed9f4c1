/**
 * The system as deployed while its PostgreSQL server restarts under a stream of uploads: every
 * upload it refuses is told to retry (503 SERVICE_UNAVAILABLE with Retry-After), none is an
 * internal error, and every upload it accepted is analysed. The server is one of the test's own
 * (startPostgresServer): the machine's shared one must not restart under other tests.
 */
import { servicesAvailable, startPostgresServer, waitFor, type TestPostgres } from '@tributary/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICES, startProcessSystem, type TestSystem } from './fixtures/system.ts';

const UPLOAD = 'mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { job { id } } }';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { data?: { uploadDocument?: { job: { id: string } } } | null; errors?: { message: string; extensions?: { code?: string } }[] };
}

describe.skipIf(!(await servicesAvailable()))('uploads while PostgreSQL restarts, as deployed', () => {
  let postgres: TestPostgres;
  let system: TestSystem;

  beforeAll(async () => {
    postgres = await startPostgresServer();
    const serviceEnv: Record<string, string> = {};
    for (const service of SERVICES) {
      const url = new URL(postgres.url);
      url.pathname = `/tributary_${service}`;
      serviceEnv[`${service.toUpperCase()}_DATABASE_URL`] = url.toString();
    }
    system = await startProcessSystem({ serviceEnv });
  }, 180_000);
  afterAll(async () => {
    await system?.stop().catch(() => {});
    await postgres?.stop();
  }, 60_000);

  it('refuses uploads only with 503 SERVICE_UNAVAILABLE and Retry-After while it is down, and completes every one it accepted', async () => {
    const token = await system.token();
    const answers: Answer[] = [];
    const send = async (n: number) => {
      const response = await fetch(system.gateways[0]!, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: UPLOAD, variables: { input: { title: `During the restart ${n}`, content: `Upload ${n}: revenue grew while the database restarted.` } } }),
      });
      answers.push({ status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Answer['body'] });
    };
    // 20 uploads/s for 6 s; at 2 s the server shuts down (fast: transactions in flight aborted), stays down 1.5 s, and starts again.
    const restart = sleep(2_000).then(() => postgres.restart(1_500));
    const sent: Promise<void>[] = [];
    for (let n = 0; n < 120; n++) {
      sent.push(send(n));
      await sleep(50);
    }
    await restart;
    await Promise.all(sent);

    const refused = answers.filter((a) => a.status !== 200 || a.body.errors);
    expect(refused.length, 'the restart refused some uploads').toBeGreaterThan(0);
    for (const a of refused) {
      expect(a.status, JSON.stringify(a.body)).toBe(503);
      expect(a.retryAfter).toBe('1');
      expect(a.body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
    }
    const accepted = answers.flatMap((a) => (a.body.data?.uploadDocument ? [a.body.data.uploadDocument.job.id] : []));
    expect(accepted.length + refused.length).toBe(120);
    const status = async (id: string) => (await system.query<{ job: { status: string } | null }>('query($id: ID!) { job(id: $id) { status } }', { id })).data?.job?.status;
    await waitFor(async () => (await Promise.all(accepted.map(status))).every((s) => s === 'COMPLETED'), 60_000, 'every accepted upload analysed');
  }, 180_000);
});
