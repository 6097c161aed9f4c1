export { startGateway, defaultSupergraphPath, type GatewayOptions, type RunningGateway } from './gateway.ts';
export { configSchema, type GatewayConfig } from './config.ts';
export { JobSubscriptions, toJobQuery } from './subscriptions.ts';
export { JobEventHub } from './job-events.ts';
