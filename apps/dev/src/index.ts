export { GRAPHIQL_QUERY, startEmbedded, type EmbeddedOptions, type EmbeddedSystem } from './embedded.ts';
export { gatewaySubgraphUrls } from './urls.ts';
export { createDemo, DEMO_ASSET_PREFIX, type Demo, type DemoOptions } from './demo/server.ts';
