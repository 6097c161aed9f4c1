export { createEmbeddedTransport, GRAPHIQL_QUERY, startEmbedded, type EmbeddedOptions, type EmbeddedSystem, type EmbeddedTransport } from './embedded.ts';
export { gatewaySubgraphUrls } from './urls.ts';
export { createDemo, DEMO_ASSET_PREFIX, type Demo, type DemoOptions } from './demo/server.ts';
