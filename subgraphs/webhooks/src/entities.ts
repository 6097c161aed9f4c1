import { defineEntity, type InferEntity } from '@mikro-orm/core';
import { Migration } from '@tributary/core/db';

export const WEBHOOK_EVENT_TYPES = ['JOB_COMPLETED', 'JOB_FAILED', 'JOB_CANCELLED'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];
export type DeliveryStatus = 'PENDING' | 'DELIVERED' | 'FAILED';

/** A tenant's endpoint: where to POST, which events, and the secret that signs them. */
export const WebhookEndpoint = defineEntity({
  name: 'WebhookEndpoint',
  tableName: 'webhooks',
  properties: (p) => ({
    id: p.uuid().primary(),
    tenantId: p.text(),
    url: p.text(),
    events: p.json<WebhookEventType[]>(),
    /** The Standard Webhooks secret (`whsec_…`): the sender needs it in clear to sign. */
    secret: p.text(),
    /** The secret before the last rotation, still signing beside the new one until `previousSecretUntil`. */
    previousSecret: p.text().nullable(),
    previousSecretUntil: p.datetime().nullable(),
    createdAt: p.datetime(),
  }),
});
export type WebhookEndpoint = InferEntity<typeof WebhookEndpoint>;

/** One event for one endpoint, with its attempts: what `webhookDeliveries` lists. */
export const WebhookDeliveryRow = defineEntity({
  name: 'WebhookDeliveryRow',
  tableName: 'webhook_deliveries',
  properties: (p) => ({
    id: p.uuid().primary(),
    tenantId: p.text(),
    webhookId: p.uuid(),
    event: p.enum([...WEBHOOK_EVENT_TYPES] as WebhookEventType[]),
    /** The job the event is about: with `event`, what makes a delivery unique per endpoint. */
    jobId: p.text(),
    /** The exact body sent on every attempt, so each retry carries the same bytes. */
    payload: p.text(),
    status: p.enum(['PENDING', 'DELIVERED', 'FAILED'] as DeliveryStatus[]),
    attempts: p.integer(),
    responseStatus: p.integer().nullable(),
    lastError: p.text().nullable(),
    /** The attempt in flight: its owner and until when its claim holds. */
    leaseToken: p.text().nullable(),
    leaseExpiresAt: p.datetime().nullable(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
    deliveredAt: p.datetime().nullable(),
  }),
});
export type WebhookDeliveryRow = InferEntity<typeof WebhookDeliveryRow>;

class CreateWebhooks extends Migration {
  override up(): void {
    this.addSql(`create table webhooks (
      id uuid primary key,
      tenant_id text not null,
      url text not null,
      events jsonb not null,
      secret text not null,
      previous_secret text null,
      previous_secret_until timestamptz null,
      created_at timestamptz not null
    )`);
    this.addSql('create index webhooks_tenant on webhooks (tenant_id, created_at desc, id desc)');
    this.addSql(`create table webhook_deliveries (
      id uuid primary key,
      tenant_id text not null,
      webhook_id uuid not null references webhooks (id) on delete cascade,
      event text not null check (event in ('JOB_COMPLETED', 'JOB_FAILED')),
      job_id text not null,
      payload text not null,
      status text not null check (status in ('PENDING', 'DELIVERED', 'FAILED')),
      attempts integer not null default 0,
      response_status integer null,
      last_error text null,
      lease_token text null,
      lease_expires_at timestamptz null,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      delivered_at timestamptz null,
      unique (webhook_id, job_id, event)
    )`);
    this.addSql('create index webhook_deliveries_page on webhook_deliveries (webhook_id, created_at desc, id desc)');
  }
}

/** Deliveries of JOB_CANCELLED. */
class AddJobCancelled extends Migration {
  override up(): void {
    this.addSql(`alter table webhook_deliveries drop constraint webhook_deliveries_event_check,
      add constraint webhook_deliveries_event_check check (event in ('JOB_COMPLETED', 'JOB_FAILED', 'JOB_CANCELLED'))`);
  }
}

/**
 * The retention prune's access path (`pruneDeliveries`): settled deliveries by the time they
 * settled. PENDING ones are never pruned, so they stay out of the index.
 */
class DeliveriesSettledIndex extends Migration {
  override up(): void {
    this.addSql("create index if not exists webhook_deliveries_settled on webhook_deliveries (updated_at) where status <> 'PENDING'");
  }

  override down(): void {
    this.addSql('drop index if exists webhook_deliveries_settled');
  }
}

export const migrations = [
  { name: '0001-webhooks', class: CreateWebhooks },
  { name: '0002-webhooks-job-cancelled', class: AddJobCancelled },
  { name: '0003-webhook-deliveries-settled-index', class: DeliveriesSettledIndex },
];
