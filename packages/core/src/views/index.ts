export { rebuildViews } from './rebuild.ts';
export { ViewsErrorCode } from './errors.ts';
export { SHADOW_SCHEMA, OLD_SCHEMA } from './shadow.ts';
export type { RebuildOptions, RebuildProgress, RebuildResult, ViewConsumer, ViewsDefinition } from './types.ts';
