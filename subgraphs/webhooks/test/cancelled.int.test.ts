/**
 * JOB_CANCELLED webhooks: a job's move to CANCELLED (its `job.updated`) is delivered once to each
 * webhook of its tenant that asked for it, signed as the other kinds are. The webhooks service in
 * this process on PostgreSQL (its bus in memory, fed the `job.updated` events the job view would
 * publish), a receiver on 127.0.0.1.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@tributary/core/log';
import { queryRun } from '@tributary/core/db';
import { signIdentity } from '@tributary/core/identity';
import { startService, type RunningService } from '@tributary/core/service';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable, waitFor } from '@tributary/core/testing';
import { migrations, WebhookDeliveryRow, WebhookEndpoint } from '../src/entities.ts';
import { createWebhooksService } from '../src/service.ts';

const TENANT = 'tenant-a';
const silent = createLogger({ service: 'test', level: 'silent' });

describe.skipIf(!(await servicesAvailable()))('JOB_CANCELLED webhooks', () => {
  const target = randomDatabaseTarget();
  const secret = 'webhooks-test-secret-webhooks-test-secret-0';
  const received: { path: string; headers: IncomingHttpHeaders; body: string }[] = [];
  let receiver: Server;
  let port: number;
  let service: RunningService;

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        received.push({ path: req.url ?? '', headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    port = (receiver.address() as AddressInfo).port;
    service = await startService(createWebhooksService(), {
      env: {
        WEBHOOKS_DATABASE_URL: `${target.url.replace(/\/[^/]*$/, '')}/${target.dbName}`,
        INTERNAL_SIGNING_SECRET: secret,
        LOG_LEVEL: 'silent',
        WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
        WEBHOOK_RETRY_DELAYS_MS: '200,400',
        WEBHOOK_TIMEOUT_MS: '3000',
      },
      port: 0,
      host: '127.0.0.1',
      logger: silent,
    });
  });
  afterAll(async () => {
    await service?.stop();
    receiver?.closeAllConnections();
    await new Promise((resolve) => receiver?.close(resolve));
    await dropTestDatabase(target);
  });

  const graphql = async <T = any>(query: string, variables: Record<string, unknown> = {}, tenantId = TENANT) => {
    const response = await fetch(service.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signIdentity(secret, { tenantId, userId: 'u' }) },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data?: T; errors?: { message: string; extensions?: { code?: string } }[] };
  };
  const createWebhook = async (path: string, events: string[], tenantId = TENANT) => {
    const answer = await graphql<{ createWebhook: { webhook: { id: string; events: string[] }; secret: string } }>(
      'mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id events } secret } }',
      { input: { url: `http://127.0.0.1:${port}${path}`, events } },
      tenantId,
    );
    expect(answer.errors).toBeUndefined();
    return answer.data!.createWebhook;
  };
  /** A job.updated as the job view publishes it. */
  const jobUpdated = (jobId: string, status: string, tenantId = TENANT) => {
    const at = new Date().toISOString();
    const envelope = {
      id: randomUUID(),
      type: 'job.updated',
      source: 'jobs',
      specversion: '1.0',
      time: at,
      dataschema: 'job.updated/v1',
      subject: jobId,
      tenantid: tenantId,
      data: { jobId, documentId: `doc-${jobId}`, status, attempts: status === 'QUEUED' ? 0 : 1, error: null, createdAt: at, updatedAt: at, completedAt: ['QUEUED', 'RUNNING'].includes(status) ? null : at, progress: null },
    };
    return { routingKey: 'job.updated', messageId: envelope.id, body: Buffer.from(JSON.stringify(envelope)) };
  };
  const at = (path: string) => received.filter((r) => r.path === path);

  it('sends one signed job.cancelled POST per cancelled job to the webhooks that asked for JOB_CANCELLED', async () => {
    const cancelledHook = await createWebhook('/cancelled', ['JOB_CANCELLED']);
    expect(cancelledHook.webhook.events).toEqual(['JOB_CANCELLED']);
    await createWebhook('/ends', ['JOB_COMPLETED', 'JOB_FAILED']);
    await createWebhook('/other-tenant', ['JOB_CANCELLED'], 'tenant-b');
    const jobId = randomUUID();
    const completedJob = randomUUID();
    // RUNNING tells nobody; CANCELLED twice (a repeated job.updated, not a redelivery) is one delivery.
    await service.transport.publish([jobUpdated(jobId, 'RUNNING'), jobUpdated(jobId, 'CANCELLED'), jobUpdated(jobId, 'CANCELLED'), jobUpdated(completedJob, 'COMPLETED')]);
    await waitFor(() => at('/cancelled').length >= 1 && at('/ends').length >= 1, 20_000, 'the deliveries');
    await sleep(500);

    const [delivery] = at('/cancelled');
    expect(at('/cancelled')).toHaveLength(1);
    const body = new Webhook(cancelledHook.secret).verify(delivery!.body, delivery!.headers as Record<string, string>);
    expect(body).toEqual({ type: 'job.cancelled', timestamp: expect.any(String), data: { jobId, documentId: `doc-${jobId}`, status: 'CANCELLED', error: null } });
    // The endpoint without JOB_CANCELLED heard of the completed job only; the other tenant of nothing.
    expect(at('/ends').map((r) => JSON.parse(r.body).data.jobId)).toEqual([completedJob]);
    expect(at('/other-tenant')).toHaveLength(0);

    const listed = await graphql<{ webhookDeliveries: { edges: { node: { id: string; event: string; status: string; attempts: number } }[] } }>(
      'query($id: ID!) { webhookDeliveries(webhookId: $id) { edges { node { id event status attempts } } } }',
      { id: cancelledHook.webhook.id },
    );
    expect(listed.data!.webhookDeliveries.edges.map((e) => e.node)).toEqual([{ id: delivery!.headers['webhook-id'], event: 'JOB_CANCELLED', status: 'DELIVERED', attempts: 1 }]);
  });

  it('takes JOB_CANCELLED in a database from before it', async () => {
    const old = randomDatabaseTarget();
    const before = await openTestDatabase(old, { migrations: migrations.slice(0, 1), logger: silent, poolSize: 1 });
    const webhookId = randomUUID();
    const insert = (db: typeof before) =>
      queryRun(
        db.fork(),
        `insert into webhook_deliveries (id, tenant_id, webhook_id, event, job_id, payload, status, attempts, created_at, updated_at) values (?, 't', ?, 'JOB_CANCELLED', 'j', '{}', 'PENDING', 0, now(), now())`,
        [randomUUID(), webhookId],
      );
    try {
      await queryRun(before.fork(), `insert into webhooks (id, tenant_id, url, events, secret, created_at) values (?, 't', 'http://example.com', '["JOB_FAILED"]', 's', now())`, [webhookId]);
      await expect(insert(before)).rejects.toThrow();
      await before.close();
      const after = await openTestDatabase(old, { entities: [WebhookEndpoint, WebhookDeliveryRow], migrations, logger: silent, poolSize: 1 });
      try {
        await expect(insert(after)).resolves.toBe(1);
      } finally {
        await after.close();
      }
    } finally {
      await before.close().catch(() => {});
      await dropTestDatabase(old);
    }
  });
});
