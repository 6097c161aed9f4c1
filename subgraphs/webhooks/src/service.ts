import type { ParsedEvent } from '@tributary/contracts';
import { TributaryError } from '@tributary/core';
import { queryRows, queryRun, valuesPlaceholders, type EntityManager } from '@tributary/core/db';
import type { HandlerContext, NewEvent, StagedEventHandler } from '@tributary/core/events';
import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import { externalCounter } from '@tributary/core/metrics';
import { retentionWorker } from '@tributary/core/retention';
import { subgraphConfigSchema, type ServiceDefinition, type SubgraphContext } from '@tributary/core/service';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { migrations, WEBHOOK_EVENT_TYPES, WebhookDeliveryRow, WebhookEndpoint, type WebhookEventType } from './entities.ts';
import { webhookResolvers } from './resolvers.ts';
import { DEFAULT_DELIVERY_RETENTION_DAYS, pruneDeliveries } from './retention.ts';
import { typeDefs } from './schema.ts';
import { newSecret, sendWebhook, signedHeaders } from './send.ts';
import { checkedAddresses, hostOf, parseWebhookUrl, WebhookUrlError, type Resolver } from './ssrf.ts';

const delays = z
  .string()
  .regex(/^\d+(,\d+)*$/, 'must be comma-separated milliseconds, e.g. 5000,60000,300000')
  .transform((s) => s.split(',').map(Number))
  .refine((list) => list.every((ms) => ms >= 1 && ms <= 86_400_000), 'each delay must be between 1 ms and 24 h');

/**
 * The production retry schedule: 5 s, 1 min, 5 min, 30 min, 2 h, 5 h, 8 h, 8 h. With the first
 * attempt, 9 attempts over about 23.6 h (the Svix-like curve: quick retries for a blip, hours
 * for an outage), then the delivery is FAILED and dead-lettered.
 */
export const DEFAULT_RETRY_DELAYS_MS = [5_000, 60_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 28_800_000, 28_800_000];

export const configSchema = subgraphConfigSchema
  .extend({
    /** One attempt's whole time (DNS, connect, answer), ms. Default 10000. */
    WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
    /**
     * The delays before each retry, ms: one retry per entry, so attempts = entries + 1. Default
     * {@link DEFAULT_RETRY_DELAYS_MS} (about 24 h in all).
     */
    WEBHOOK_RETRY_DELAYS_MS: delays.default(DEFAULT_RETRY_DELAYS_MS),
    /**
     * `true`: webhooks may point at loopback, private and link-local addresses (development and
     * tests only; refused with NODE_ENV=production). Default false.
     */
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
    /** Attempts in flight at once per process (each holds no database connection while it waits). Default 32. */
    WEBHOOK_CONCURRENCY: z.coerce.number().int().min(1).max(512).default(32),
    /**
     * How long a settled delivery (DELIVERED or FAILED) is kept, days (1..3650): listed by
     * `webhookDeliveries`, replayable from the dead-letter queue. Default 30. PENDING ones are kept
     * until they settle.
     */
    WEBHOOK_DELIVERY_RETENTION_DAYS: z.coerce.number().int().min(1).max(3650).default(DEFAULT_DELIVERY_RETENTION_DAYS),
  })
  .superRefine((config, ctx) => {
    if (config.WEBHOOK_ALLOW_PRIVATE_NETWORKS && config.NODE_ENV === 'production') {
      ctx.addIssue({ code: 'custom', path: ['WEBHOOK_ALLOW_PRIVATE_NETWORKS'], message: 'must not be true with NODE_ENV=production (it lets webhooks reach internal services)' });
    }
  });
export type WebhooksConfig = z.infer<typeof configSchema>;

/** Error codes of the webhooks service. */
export const WebhookErrorCode = {
  /** An attempt failed (non-2xx, timeout, refused connection or address): retried through the tiers. */
  DELIVERY_FAILED: 'WEBHOOK_DELIVERY_FAILED',
} as const;

const attemptsCounter = () => externalCounter('tributary_webhook_attempts_total', 'Webhook POST attempts by outcome', ['outcome']);

/** The webhook event of each terminal job status. */
const eventOf: Partial<Record<string, WebhookEventType>> = { COMPLETED: 'JOB_COMPLETED', FAILED: 'JOB_FAILED', CANCELLED: 'JOB_CANCELLED' };
const bodyType: Record<WebhookEventType, string> = { JOB_COMPLETED: 'job.completed', JOB_FAILED: 'job.failed', JOB_CANCELLED: 'job.cancelled' };

/** The webhook event a `job.updated` is, if any: only a job's move to COMPLETED, FAILED or CANCELLED. */
function kindOf(event: ParsedEvent): WebhookEventType | undefined {
  if (event.dataschema !== 'job.updated/v1') return undefined;
  return eventOf[event.data.status];
}

const hooksFor = (em: EntityManager, tenantId: string, kind: WebhookEventType) =>
  queryRows<{ id: string }>(em, 'select id from webhooks where tenant_id = ? and events @> ?::jsonb order by id', [tenantId, JSON.stringify([kind])]);

/**
 * Whether {@link fanOut} can do anything with an event, asked before its transaction: most
 * `job.updated` are not terminal, and most tenants have no webhook for them. A webhook created
 * just after this read misses the event, as it would had the handler's own read run first.
 */
export async function fanOutRelevant(event: ParsedEvent, em: EntityManager): Promise<boolean> {
  const kind = kindOf(event);
  return kind !== undefined && (await hooksFor(em, event.tenantid, kind)).length > 0;
}

/**
 * `job.updated` → one delivery row per matching webhook of the event's tenant and one
 * `webhook.delivery` per row, in the consumer's inbox transaction. Only a job's move to
 * COMPLETED, FAILED or CANCELLED counts. A delivery is unique per (webhook, job, event): a job
 * announced COMPLETED twice (a repeated `job.updated`, not just a redelivery, which the inbox
 * already drops) is delivered once.
 */
export async function fanOut(event: ParsedEvent, { em, publish }: HandlerContext): Promise<void> {
  const kind = kindOf(event);
  if (!kind || event.dataschema !== 'job.updated/v1') return;
  const job = event.data;
  const hooks = await hooksFor(em, event.tenantid, kind);
  if (hooks.length === 0) return;
  // The body is fixed here, so every attempt sends the same bytes.
  const payload = JSON.stringify({
    type: bodyType[kind],
    timestamp: job.completedAt ?? job.updatedAt,
    data: { jobId: job.jobId, documentId: job.documentId, status: job.status, error: job.error },
  });
  const now = new Date().toISOString();
  const inserted = await queryRows<{ id: string; webhook_id: string }>(
    em,
    `insert into webhook_deliveries (id, tenant_id, webhook_id, event, job_id, payload, status, attempts, created_at, updated_at)
     select v.id::uuid, v.tenant_id, v.webhook_id::uuid, v.event, v.job_id, v.payload, 'PENDING', 0, v.at::timestamptz, v.at::timestamptz
     from (values ${valuesPlaceholders(hooks.length, 7)}) as v (id, tenant_id, webhook_id, event, job_id, payload, at)
     on conflict (webhook_id, job_id, event) do nothing
     returning id, webhook_id`,
    hooks.flatMap((hook) => [randomUUID(), event.tenantid, hook.id, kind, job.jobId, payload, now]),
  );
  const announce: NewEvent<'webhook.delivery'>[] = inserted.map((row) => ({
    type: 'webhook.delivery',
    subject: row.id,
    tenantId: event.tenantid,
    causedBy: event,
    data: { deliveryId: row.id, webhookId: row.webhook_id },
  }));
  await publish(announce);
}

interface Claimed {
  payload: string;
  attempts: number;
  url: string;
  secret: string;
  previous_secret: string | null;
  previous_secret_until: Date | string | null;
}

/**
 * `webhook.delivery` → one signed POST, holding no database connection while it waits: claim
 * the delivery (a lease of the timeout plus a margin), POST, then record the attempt only if the
 * lease still holds. Success settles the event (inbox) with DELIVERED; a failure records the
 * attempt and throws, so the consumer's retry tiers schedule the next one; on the last attempt
 * the row is FAILED and the event dead-lettered. A delivery already DELIVERED, or whose webhook
 * was deleted, is acked with no POST; one under another live lease comes back when it expires.
 * At least once: a POST whose recording is lost (a crash) is sent again, with the same
 * `webhook-id`.
 */
export function deliver(options: { timeoutMs: number; allowPrivate: boolean; resolve?: Resolver }): StagedEventHandler {
  const leaseMs = options.timeoutMs + 30_000;
  return async (event, ctx) => {
    if (event.dataschema !== 'webhook.delivery/v1') return;
    const { deliveryId } = event.data;
    const token = randomUUID();
    const claim = await ctx.transaction(async ({ em }) => {
      const now = new Date();
      const [claimed] = await queryRows<Claimed>(
        em,
        `update webhook_deliveries d set lease_token = ?, lease_expires_at = ?::timestamptz, updated_at = ?::timestamptz
         from webhooks w
         where d.id = ?::uuid and d.tenant_id = ? and w.id = d.webhook_id and d.status <> 'DELIVERED'
           and (d.lease_expires_at is null or d.lease_expires_at < ?::timestamptz)
         returning d.payload, d.attempts, w.url, w.secret, w.previous_secret, w.previous_secret_until`,
        [token, new Date(now.getTime() + leaseMs).toISOString(), now.toISOString(), deliveryId, event.tenantid, now.toISOString()],
      );
      if (claimed) return { claimed };
      const [row] = await queryRows<{ status: string; lease_expires_at: Date | string | null }>(em, 'select status, lease_expires_at from webhook_deliveries where id = ?::uuid and tenant_id = ?', [
        deliveryId,
        event.tenantid,
      ]);
      return { row };
    });
    if (!claim.claimed) {
      // Gone with its webhook, or delivered already (a redelivery after the ack was lost).
      if (!claim.row || claim.row.status === 'DELIVERED' || !claim.row.lease_expires_at) return;
      return { retryInMs: Math.max(1_000, new Date(claim.row.lease_expires_at).getTime() - Date.now() + 100) };
    }
    const { claimed } = claim;
    const secrets = [claimed.secret];
    if (claimed.previous_secret && claimed.previous_secret_until && new Date(claimed.previous_secret_until).getTime() > Date.now()) secrets.push(claimed.previous_secret);
    const headers = signedHeaders(deliveryId, new Date(), claimed.payload, secrets);
    const result = await sendWebhook(claimed.url, headers, claimed.payload, options);
    attemptsCounter().inc({ outcome: result.ok ? 'delivered' : 'failed' });
    const attempts = claimed.attempts + 1;
    const at = new Date().toISOString();
    if (result.ok) {
      await ctx.settle(
        async ({ em }) =>
          (await queryRun(
            em,
            `update webhook_deliveries set status = 'DELIVERED', attempts = ?, response_status = ?, last_error = null, delivered_at = ?::timestamptz,
               lease_token = null, lease_expires_at = null, updated_at = ?::timestamptz
             where id = ?::uuid and lease_token = ?`,
            [attempts, result.status, at, at, deliveryId, token],
          )) > 0,
      );
      return;
    }
    const recorded = await ctx.transaction(({ em }) =>
      queryRun(
        em,
        `update webhook_deliveries set status = ?, attempts = ?, response_status = ?, last_error = ?, lease_token = null, lease_expires_at = null, updated_at = ?::timestamptz
         where id = ?::uuid and lease_token = ?`,
        [ctx.lastAttempt ? 'FAILED' : 'PENDING', attempts, result.status, result.error, at, deliveryId, token],
      ),
    );
    // Our lease was taken over (this attempt outlived it): the new holder records the outcome.
    if (recorded === 0) return;
    throw new TributaryError(WebhookErrorCode.DELIVERY_FAILED, `webhook delivery ${deliveryId}, attempt ${attempts}: ${result.error ?? 'failed'}`);
  };
}

/** The webhooks service: endpoints and deliveries, fed by `job.updated`. */
export function createWebhooksService(options: { resolve?: Resolver } = {}): ServiceDefinition<WebhooksConfig> {
  return {
    name: 'webhooks',
    typeDefs,
    entities: [WebhookEndpoint, WebhookDeliveryRow],
    migrations,
    configSchema,
    defaultPort: 4005,
    workers: ({ db, logger, config }) => [
      retentionWorker({ service: 'webhooks', db, logger, tasks: [{ table: 'webhook_deliveries', prune: () => pruneDeliveries(db, config.WEBHOOK_DELIVERY_RETENTION_DAYS) }] }),
    ],
    consumers: ({ config }) => [
      { name: 'fanout', types: ['job.updated'], handler: fanOut, relevant: fanOutRelevant },
      {
        name: 'sender',
        types: ['webhook.delivery'],
        stagedHandler: deliver({ timeoutMs: config.WEBHOOK_TIMEOUT_MS, allowPrivate: config.WEBHOOK_ALLOW_PRIVATE_NETWORKS, ...(options.resolve ? { resolve: options.resolve } : {}) }),
        concurrency: config.WEBHOOK_CONCURRENCY,
        prefetch: config.WEBHOOK_CONCURRENCY * 2,
        // One retry per tier: the schedule is the list, not its last entry repeated.
        retryDelaysMs: config.WEBHOOK_RETRY_DELAYS_MS,
        maxAttempts: config.WEBHOOK_RETRY_DELAYS_MS.length + 1,
      },
    ],
    resolvers: ({ config }) => webhookResolvers({ allowPrivate: config.WEBHOOK_ALLOW_PRIVATE_NETWORKS, ...(options.resolve ? { resolve: options.resolve } : {}) }),
  };
}

export const webhooksService = createWebhooksService();
