export { typeDefs } from './schema.ts';
export { configSchema, createWebhooksService, DEFAULT_RETRY_DELAYS_MS, deliver, fanOut, WebhookErrorCode, webhooksService, type WebhooksConfig } from './service.ts';
export { newSecret, sendWebhook, signedHeaders, type AttemptResult } from './send.ts';
export { checkedAddresses, parseWebhookUrl, refusedAddress, WebhookUrlError, type Resolver } from './ssrf.ts';
