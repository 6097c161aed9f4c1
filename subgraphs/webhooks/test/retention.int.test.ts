/**
 * Webhook deliveries' retention: settled deliveries older than WEBHOOK_DELIVERY_RETENTION_DAYS
 * go, pending ones and recent ones stay; the service prunes on its own schedule and reports the
 * table's rows on /metrics. PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@tributary/core/log';
import { queryRows, queryRun, type Database } from '@tributary/core/db';
import { registry } from '@tributary/core/metrics';
import { startService, type RunningService } from '@tributary/core/service';
import { dropTestDatabase, openTestDatabase, randomDatabaseTarget, servicesAvailable, waitFor } from '@tributary/core/testing';
import { migrations, WebhookDeliveryRow, WebhookEndpoint } from '../src/entities.ts';
import { pruneDeliveries } from '../src/retention.ts';
import { createWebhooksService } from '../src/service.ts';

const silent = createLogger({ service: 'test', level: 'silent' });
const DAY = 86_400_000;

describe.skipIf(!(await servicesAvailable()))('webhook delivery retention', () => {
  const target = randomDatabaseTarget();
  let db: Database;
  let webhookId: string;

  beforeAll(async () => {
    db = await openTestDatabase(target, { entities: [WebhookEndpoint, WebhookDeliveryRow], migrations, logger: silent });
    webhookId = randomUUID();
    await queryRun(db.fork(), `insert into webhooks (id, tenant_id, url, events, secret, created_at) values (?, 't', 'http://127.0.0.1:1/', '["JOB_COMPLETED"]', 'whsec_x', now())`, [webhookId]);
  });
  afterAll(async () => {
    await db?.close();
    await dropTestDatabase(target);
  });

  /** A delivery in `status`, last changed `ageDays` ago; returns its id. */
  async function delivery(status: 'PENDING' | 'DELIVERED' | 'FAILED', ageDays: number): Promise<string> {
    const id = randomUUID();
    const at = new Date(Date.now() - ageDays * DAY).toISOString();
    await queryRun(
      db.fork(),
      `insert into webhook_deliveries (id, tenant_id, webhook_id, event, job_id, payload, status, attempts, created_at, updated_at)
       values (?, 't', ?, 'JOB_COMPLETED', ?, '{}', ?, 1, ?::timestamptz, ?::timestamptz)`,
      [id, webhookId, randomUUID(), status, at, at],
    );
    return id;
  }

  const remaining = async () => (await queryRows<{ id: string }>(db.fork(), 'select id from webhook_deliveries order by id')).map((r) => r.id).sort();

  it('deletes settled deliveries past the retention, in batches, and keeps pending and recent ones', async () => {
    const old = [await delivery('DELIVERED', 40), await delivery('FAILED', 31), await delivery('DELIVERED', 45)];
    const kept = [await delivery('PENDING', 40), await delivery('DELIVERED', 29), await delivery('FAILED', 1), await delivery('PENDING', 0)];
    // Batches of 2: the loop goes round twice.
    expect(await pruneDeliveries(db, 30, 2)).toBe(old.length);
    expect(await remaining()).toEqual(kept.sort());
    expect(await pruneDeliveries(db, 30)).toBe(0);
  });

  it('the service prunes them on its own and reports the table on /metrics', async () => {
    const gone = await delivery('DELIVERED', 400);
    const service: RunningService = await startService(createWebhooksService(), {
      env: {
        WEBHOOKS_DATABASE_URL: `${target.url.replace(/\/[^/]*$/, '')}/${target.dbName}`,
        INTERNAL_SIGNING_SECRET: 'webhooks-test-secret-webhooks-test-secret-0',
        LOG_LEVEL: 'silent',
        WEBHOOK_DELIVERY_RETENTION_DAYS: '365',
      },
      port: 0,
      host: '127.0.0.1',
      logger: silent,
    });
    try {
      const text = await registry.getSingleMetricAsString('tributary_table_rows');
      for (const table of ['webhook_deliveries', 'tributary_inbox', 'tributary_outbox', 'tributary_idempotency']) {
        expect(text).toMatch(new RegExp(`tributary_table_rows\\{service="webhooks",table="${table}"\\} \\d+`));
      }
      // The first round comes a few seconds after the start.
      await waitFor(async () => !(await remaining()).includes(gone), 30_000, 'the first prune round');
    } finally {
      await service.stop();
    }
  }, 60_000);
});
