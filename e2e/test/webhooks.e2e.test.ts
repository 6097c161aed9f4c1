import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { servicesAvailable, waitFor } from '@tributary/core/testing';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployedBrokers, startEmbeddedSystem, startProcessSystem, type TestSystem } from './fixtures/system.ts';

// Short retry tiers (the production default spans about 24 h): 6 attempts over 31 s.
const WEBHOOK_ENV = { WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', WEBHOOK_RETRY_DELAYS_MS: '1000,2000,4000,8000,16000', WEBHOOK_TIMEOUT_MS: '3000' };
const ATTEMPTS = 6;

const CREATE = `mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id url events createdAt } secret } }`;
const DELIVERIES = `query($id: ID!, $first: Int, $after: String) {
  webhookDeliveries(webhookId: $id, first: $first, after: $after) {
    edges { cursor node { id event status attempts responseStatus lastError createdAt deliveredAt } }
    pageInfo { hasNextPage endCursor }
  }
}`;
const UPLOAD = `mutation($input: UploadDocumentInput!) { uploadDocument(input: $input) { document { id } job { id status } } }`;
const TEXT = 'Solar and wind capacity grew strongly this year. Storage costs fell again, and grid operators expanded transmission.';

interface Request {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver on 127.0.0.1: records every request and answers with `status(path)`. */
class Receiver {
  readonly requests: Request[] = [];
  private server: Server | undefined;
  port = 0;
  constructor(private readonly status: (path: string) => number = () => 204) {}

  async start(port = 0): Promise<this> {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        this.requests.push({ path: req.url ?? '', headers: req.headers, body });
        res.writeHead(this.status(req.url ?? '')).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }

  url(path: string) {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  at(path: string) {
    return this.requests.filter((r) => r.path === path);
  }
}

async function as(system: TestSystem, tenant: string) {
  const token = await system.token({ tenant, sub: `${tenant}-user` });
  return <T = any>(query: string, variables: Record<string, unknown> = {}) => system.query<T>(query, variables, { token });
}

type Query = Awaited<ReturnType<typeof as>>;

async function createWebhook(query: Query, url: string, events = ['JOB_COMPLETED']) {
  const response = await query(CREATE, { input: { url, events } });
  expect(response.errors).toBeUndefined();
  return response.data.createWebhook as { webhook: { id: string; url: string; events: string[]; createdAt: string }; secret: string };
}

async function upload(query: Query, title: string) {
  const response = await query(UPLOAD, { input: { title, content: TEXT } });
  expect(response.errors).toBeUndefined();
  return response.data.uploadDocument as { document: { id: string }; job: { id: string } };
}

async function deliveries(query: Query, webhookId: string) {
  const response = await query(DELIVERIES, { id: webhookId, first: 50 });
  expect(response.errors).toBeUndefined();
  return (response.data.webhookDeliveries.edges as { node: any }[]).map((e) => e.node);
}

const modes: [string, () => Promise<TestSystem>][] = [
  ['embedded defaults (pnpm dev)', () => startEmbeddedSystem({ env: WEBHOOK_ENV })],
];
const available = await servicesAvailable();
if (available) for (const broker of await deployedBrokers()) modes.push([`separate processes on PostgreSQL and ${broker.name}`, () => startProcessSystem({ serviceEnv: WEBHOOK_ENV, eventBusUrl: broker.url })]);

describe.skipIf(!available).each(modes)('webhooks, %s', (_name, start) => {
  let system: TestSystem;
  const receiver = new Receiver((path) => (path.startsWith('/always-500') ? 500 : 204));
  beforeAll(async () => {
    await receiver.start();
    system = await start();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
    await receiver.stop();
  }, 60_000);

  it('sends one signed POST per completed job, verified with the standardwebhooks library', async () => {
    const query = await as(system, 'hooks-signed');
    const { webhook, secret } = await createWebhook(query, receiver.url('/signed'));
    expect(webhook).toMatchObject({ url: receiver.url('/signed'), events: ['JOB_COMPLETED'] });
    expect(secret).toMatch(/^whsec_/);
    expect((await query('{ webhooks { id url events } }')).data.webhooks).toEqual([{ id: webhook.id, url: webhook.url, events: ['JOB_COMPLETED'] }]);

    const jobs = [await upload(query, 'First'), await upload(query, 'Second')];
    await waitFor(async () => receiver.at('/signed').length >= 2, 30_000, 'two deliveries');
    await sleep(1_000); // no third one comes
    const received = receiver.at('/signed');
    expect(received).toHaveLength(2);
    const bodies = received.map((r) => new Webhook(secret).verify(r.body, r.headers as Record<string, string>) as any);
    expect(bodies.map((b) => b.data.jobId).sort()).toEqual(jobs.map((j) => j.job.id).sort());
    for (const body of bodies) {
      expect(body).toMatchObject({ type: 'job.completed', data: { status: 'COMPLETED', error: null } });
      expect(jobs.map((j) => j.document.id)).toContain(body.data.documentId);
      expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
    }
    expect(() => new Webhook(`whsec_${Buffer.alloc(32, 1).toString('base64')}`).verify(received[0]!.body, received[0]!.headers as Record<string, string>)).toThrow();

    await waitFor(async () => (await deliveries(query, webhook.id)).every((d) => d.status === 'DELIVERED'), 10_000, 'both DELIVERED');
    const rows = await deliveries(query, webhook.id);
    expect(rows).toHaveLength(2);
    expect(rows.map((d) => d.id).sort()).toEqual(received.map((r) => r.headers['webhook-id']).sort());
    for (const row of rows) expect(row).toMatchObject({ event: 'JOB_COMPLETED', status: 'DELIVERED', attempts: 1, responseStatus: 204, lastError: null });
    const page = await query(DELIVERIES, { id: webhook.id, first: 1 });
    expect(page.data.webhookDeliveries.pageInfo.hasNextPage).toBe(true);
    const next = await query(DELIVERIES, { id: webhook.id, first: 1, after: page.data.webhookDeliveries.pageInfo.endCursor });
    expect(next.data.webhookDeliveries.edges.map((e: any) => e.node.id)).toEqual([rows[1]!.id]);

    // A rotated secret signs from now on; the previous one still verifies during the grace period.
    const rotated = await query('mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }', { id: webhook.id });
    const newSecret = rotated.data.rotateWebhookSecret.secret as string;
    expect(newSecret).not.toBe(secret);
    await upload(query, 'Third');
    await waitFor(async () => receiver.at('/signed').length >= 3, 30_000, 'a third delivery');
    const third = receiver.at('/signed')[2]!;
    expect(() => new Webhook(newSecret).verify(third.body, third.headers as Record<string, string>)).not.toThrow();
    expect(() => new Webhook(secret).verify(third.body, third.headers as Record<string, string>)).not.toThrow();
  });

  it.concurrent('delivers once the receiver is back after 20 s down, with the same webhook-id', async () => {
    const query = await as(system, 'hooks-down');
    const down = await new Receiver().start();
    const port = down.port;
    await down.stop(); // the port now refuses connections
    const { webhook, secret } = await createWebhook(query, `http://127.0.0.1:${port}/down`);
    const startedAt = Date.now();
    const { job } = await upload(query, 'While down');

    await waitFor(async () => (await deliveries(query, webhook.id))[0]?.attempts >= 2, 20_000, 'two refused attempts');
    const pending = (await deliveries(query, webhook.id))[0];
    expect(pending).toMatchObject({ status: 'PENDING', responseStatus: null, deliveredAt: null });
    expect(pending.lastError).toMatch(/ECONNREFUSED/);

    await sleep(Math.max(0, 20_000 - (Date.now() - startedAt)));
    const back = await new Receiver().start(port);
    try {
      await waitFor(async () => back.requests.length >= 1, 40_000, 'the delivery after the receiver is back');
      const [request] = back.requests;
      expect(request!.headers['webhook-id']).toBe(pending.id);
      expect((new Webhook(secret).verify(request!.body, request!.headers as Record<string, string>) as any).data.jobId).toBe(job.id);
      await waitFor(async () => (await deliveries(query, webhook.id))[0]?.status === 'DELIVERED', 10_000, 'DELIVERED');
      const delivered = (await deliveries(query, webhook.id))[0];
      expect(delivered.id).toBe(pending.id);
      expect(delivered.attempts).toBeGreaterThan(pending.attempts);
      expect(delivered).toMatchObject({ responseStatus: 204, lastError: null });
      expect(delivered.deliveredAt).not.toBeNull();
      await sleep(1_000);
      expect(back.requests).toHaveLength(1);
    } finally {
      await back.stop();
    }
  });

  it.concurrent('retries a receiver that always answers 500, then shows the delivery FAILED', async () => {
    const query = await as(system, 'hooks-500');
    const { webhook } = await createWebhook(query, receiver.url('/always-500'));
    await upload(query, 'Always failing');
    await waitFor(async () => (await deliveries(query, webhook.id))[0]?.status === 'FAILED', 60_000, 'the delivery to fail');
    const [failed] = await deliveries(query, webhook.id);
    expect(failed).toMatchObject({ status: 'FAILED', attempts: ATTEMPTS, responseStatus: 500, lastError: 'HTTP 500', deliveredAt: null });
    const requests = receiver.at('/always-500');
    expect(requests).toHaveLength(ATTEMPTS);
    expect(new Set(requests.map((r) => r.headers['webhook-id']))).toEqual(new Set([failed.id]));
    // The retries wait (1 + 2 + 4 + 8 + 16 s): growing gaps between attempts.
    const times = requests.map((r) => Number(r.headers['webhook-timestamp']));
    expect(times.at(-1)! - times[0]!).toBeGreaterThanOrEqual(25);
  });

  it("sends each job's webhook only to its own tenant's endpoints", async () => {
    const [a, b] = [await as(system, 'hooks-tenant-a'), await as(system, 'hooks-tenant-b')];
    const hookA = await createWebhook(a, receiver.url('/tenant-a'));
    const hookB = await createWebhook(b, receiver.url('/tenant-b'), ['JOB_COMPLETED', 'JOB_FAILED']);
    const jobsA = [await upload(a, 'A one'), await upload(a, 'A two')].map((u) => u.job.id);
    const jobsB = [(await upload(b, 'B one')).job.id];
    await waitFor(async () => receiver.at('/tenant-a').length >= 2 && receiver.at('/tenant-b').length >= 1, 30_000, 'both tenants delivered');
    await sleep(1_000);
    const jobIds = (path: string, secret: string) => receiver.at(path).map((r) => (new Webhook(secret).verify(r.body, r.headers as Record<string, string>) as any).data.jobId).sort();
    expect(jobIds('/tenant-a', hookA.secret)).toEqual(jobsA.sort());
    expect(jobIds('/tenant-b', hookB.secret)).toEqual(jobsB);

    // B sees none of A's webhooks or deliveries, and cannot touch them.
    expect((await b('{ webhooks { id } }')).data.webhooks).toEqual([{ id: hookB.webhook.id }]);
    for (const [operation, variables] of [
      [DELIVERIES, { id: hookA.webhook.id }],
      ['mutation($id: ID!) { deleteWebhook(id: $id) }', { id: hookA.webhook.id }],
      ['mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }', { id: hookA.webhook.id }],
    ] as const) {
      expect((await b(operation, variables)).errors?.[0]?.extensions?.code, operation).toBe('NOT_FOUND');
    }
    expect((await a(DELIVERIES, { id: hookA.webhook.id })).data.webhookDeliveries.edges).toHaveLength(2);

    // A deletes its webhook: gone, and its deliveries with it.
    expect((await a('mutation($id: ID!) { deleteWebhook(id: $id) }', { id: hookA.webhook.id })).data.deleteWebhook).toBe(true);
    expect((await a(DELIVERIES, { id: hookA.webhook.id })).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect((await a('{ webhooks { id } }')).data.webhooks).toEqual([]);
  });

  it('refuses bad input with BAD_USER_INPUT and the field', async () => {
    const query = await as(system, 'hooks-input');
    for (const [input, field] of [
      [{ url: 'ftp://example.com/hook', events: ['JOB_COMPLETED'] }, 'url'],
      [{ url: 'not a url', events: ['JOB_COMPLETED'] }, 'url'],
      [{ url: receiver.url('/x'), events: [] }, 'events'],
    ] as const) {
      const response = await query(CREATE, { input });
      expect(response.errors?.[0]?.extensions, JSON.stringify(input)).toMatchObject({ code: 'BAD_USER_INPUT', field });
    }
    expect((await query('mutation { deleteWebhook(id: "nope") }')).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });
});

describe.skipIf(!available)('webhooks without WEBHOOK_ALLOW_PRIVATE_NETWORKS', () => {
  let system: TestSystem;
  beforeAll(async () => {
    system = await startEmbeddedSystem();
  }, 120_000);
  afterAll(async () => {
    await system?.stop();
  }, 60_000);

  it('refuses a webhook to a loopback, private, link-local or metadata address at creation', async () => {
    const query = await as(system, 'hooks-ssrf');
    for (const url of ['http://127.0.0.1/hook', 'http://127.0.0.1:8080/hook', 'http://localhost:3000/', 'http://[::1]/', 'http://10.0.0.7/', 'http://192.168.1.20/', 'http://169.254.169.254/latest/meta-data/', 'http://[fd00:ec2::254]/', 'http://[::ffff:127.0.0.1]/']) {
      const response = await query(CREATE, { input: { url, events: ['JOB_COMPLETED'] } });
      expect(response.errors?.[0]?.extensions, url).toMatchObject({ code: 'BAD_USER_INPUT', field: 'url' });
      expect(response.data, url).toBeNull();
    }
    expect((await query('{ webhooks { id } }')).data.webhooks).toEqual([]);
  });
});
