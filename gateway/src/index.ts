export { startGateway, defaultSupergraphPath, type GatewayOptions, type RunningGateway } from './gateway.ts';
export { configSchema, loadGatewayConfig, supergraphSubgraphNames, type GatewayConfig } from './config.ts';
export { signToken } from './auth.ts';
export { EventSubscriptions } from './subscriptions.ts';
export { EventHub, type ListenSpec } from './event-hub.ts';
export { createUndiciFetcher, deduplicateRepresentations, FastDataSource } from './datasource.ts';
export { EntityCache, entityKeys, invalidationRules, type EntityChange, type InvalidationRule, type InvalidationRules } from './cache/index.ts';
