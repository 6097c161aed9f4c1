/**
 * The event-invalidated result cache (see {@link EntityCache}): what the gateway and its tests use.
 */
export { EntityCache, type EntityCacheOptions } from './entity-cache.ts';
export { entityKeys, type SupergraphInput } from './facts.ts';
export { contractOf, invalidationRules, type EntityChange, type InvalidationRule, type InvalidationRules } from './rules.ts';
export type { Plan } from './plan.ts';
