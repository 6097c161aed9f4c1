export { startEmbedded, subgraphServices, type EmbeddedOptions, type EmbeddedSystem } from './embedded.ts';
