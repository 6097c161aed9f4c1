export { GRAPHIQL_QUERY, startEmbedded, subgraphServices, type EmbeddedOptions, type EmbeddedSystem } from './embedded.ts';
export { createDemo, DEMO_ASSET_PREFIX, type Demo, type DemoOptions } from './demo/server.ts';
