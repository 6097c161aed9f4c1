import { badUserInput, newestFirstPage, notFound } from '@tributary/core/graphql';
import type { SubgraphContext } from '@tributary/core/service';
import { randomUUID } from 'node:crypto';
import { WEBHOOK_EVENT_TYPES, WebhookDeliveryRow, WebhookEndpoint, type WebhookEventType } from './entities.ts';
import { newSecret } from './send.ts';
import { checkedAddresses, hostOf, parseWebhookUrl, WebhookUrlError, type Resolver } from './ssrf.ts';

/** How long the previous secret still signs beside the new one after a rotation. */
const PREVIOUS_SECRET_MS = 24 * 3_600_000;
/** Webhooks per tenant at most. */
const MAX_WEBHOOKS_PER_TENANT = 100;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** What the resolvers need of the settings: whether a webhook may point at a private network, and the DNS (tests' own). */
export interface ResolverOptions {
  allowPrivate: boolean;
  resolve?: Resolver;
}

const iso = (value: Date | string | null | undefined) => (value === null || value === undefined ? null : new Date(value).toISOString());

const toWebhook = (w: WebhookEndpoint) => ({ id: w.id, url: w.url, events: w.events, createdAt: iso(w.createdAt) });

const toDelivery = (d: WebhookDeliveryRow) => ({
  id: d.id,
  event: d.event,
  status: d.status,
  attempts: d.attempts,
  responseStatus: d.responseStatus ?? null,
  lastError: d.lastError ?? null,
  createdAt: iso(d.createdAt),
  deliveredAt: iso(d.deliveredAt),
});

async function ownWebhook(ctx: SubgraphContext, id: string): Promise<WebhookEndpoint> {
  const webhook = UUID.test(id) ? await ctx.em.findOne(WebhookEndpoint, { id, tenantId: ctx.tenantId }) : null;
  if (!webhook) throw notFound('Webhook', id);
  return webhook;
}

/** A webhook's URL, parsed and its host's addresses checked now (the sender checks them again at each attempt). */
async function checkedUrl(raw: string, options: ResolverOptions): Promise<URL> {
  try {
    const url = parseWebhookUrl(raw.trim());
    await checkedAddresses(hostOf(url), { allowPrivate: options.allowPrivate, ...(options.resolve ? { resolve: options.resolve } : {}) });
    return url;
  } catch (error) {
    if (error instanceof WebhookUrlError) throw badUserInput(`url: ${error.message}`, 'url');
    throw error;
  }
}

/** `createWebhook`: a new endpoint of the tenant, with its secret (shown this once). */
async function createWebhook(ctx: SubgraphContext, input: { url: string; events: WebhookEventType[] }, options: ResolverOptions) {
  const events = [...new Set(input.events)].filter((e) => (WEBHOOK_EVENT_TYPES as readonly string[]).includes(e));
  if (events.length === 0) throw badUserInput('name at least one event', 'events');
  const url = await checkedUrl(input.url, options);
  if ((await ctx.em.count(WebhookEndpoint, { tenantId: ctx.tenantId })) >= MAX_WEBHOOKS_PER_TENANT) {
    throw badUserInput(`a tenant has at most ${MAX_WEBHOOKS_PER_TENANT} webhooks`, 'url');
  }
  const secret = newSecret();
  const webhook = ctx.em.create(WebhookEndpoint, {
    id: randomUUID(),
    tenantId: ctx.tenantId,
    url: url.toString(),
    events,
    secret,
    previousSecret: null,
    previousSecretUntil: null,
    createdAt: new Date(),
  });
  await ctx.em.flush();
  return { webhook: toWebhook(webhook), secret };
}

/** `rotateWebhookSecret`: a new secret; the previous one still signs for {@link PREVIOUS_SECRET_MS}. */
async function rotateWebhookSecret(ctx: SubgraphContext, id: string) {
  const webhook = await ownWebhook(ctx, id);
  const secret = newSecret();
  webhook.previousSecret = webhook.secret;
  webhook.previousSecretUntil = new Date(Date.now() + PREVIOUS_SECRET_MS);
  webhook.secret = secret;
  await ctx.em.flush();
  return { secret };
}

/** The webhooks API: a tenant's endpoints and their deliveries. */
export function webhookResolvers(options: ResolverOptions) {
  return {
    Query: {
      webhooks: async (_: unknown, __: unknown, ctx: SubgraphContext) =>
        (await ctx.em.find(WebhookEndpoint, { tenantId: ctx.tenantId }, { orderBy: { createdAt: 'desc', id: 'desc' } })).map(toWebhook),
      webhookDeliveries: async (_: unknown, args: { webhookId: string; first?: number | null; after?: string | null }, ctx: SubgraphContext) => {
        const webhook = await ownWebhook(ctx, args.webhookId);
        return newestFirstPage(
          args,
          (after, limit) => ctx.em.find(WebhookDeliveryRow, { webhookId: webhook.id, tenantId: ctx.tenantId, ...after }, { orderBy: { createdAt: 'desc', id: 'desc' }, limit }),
          toDelivery,
        );
      },
    },
    Mutation: {
      createWebhook: (_: unknown, { input }: { input: { url: string; events: WebhookEventType[] } }, ctx: SubgraphContext) => createWebhook(ctx, input, options),
      deleteWebhook: async (_: unknown, { id }: { id: string }, ctx: SubgraphContext) => {
        const deleted = UUID.test(id) ? await ctx.em.nativeDelete(WebhookEndpoint, { id, tenantId: ctx.tenantId }) : 0;
        if (deleted === 0) throw notFound('Webhook', id);
        return true;
      },
      rotateWebhookSecret: (_: unknown, { id }: { id: string }, ctx: SubgraphContext) => rotateWebhookSecret(ctx, id),
    },
  };
}
