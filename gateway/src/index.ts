export { startGateway, defaultSupergraphPath, type GatewayOptions, type RunningGateway } from './gateway.ts';
export { configSchema, loadGatewayConfig, type GatewayConfig } from './config.ts';
export { signToken } from './auth.ts';
export { JobSubscriptions, toJobQuery } from './subscriptions.ts';
export { JobEventHub } from './job-events.ts';
export { createUndiciFetcher, deduplicateRepresentations, FastDataSource } from './datasource.ts';
export { EntityCache, entityKeys, type EntityChange, type InvalidationRule, type InvalidationRules } from './cache.ts';
export { productRules } from './cache-rules.ts';
