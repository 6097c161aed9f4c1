import { readBindings } from '@tributary/core/bindings';
import { ConfigError } from '@tributary/core/config';
import { Kind, parse as parseGraphQL } from 'graphql';
import type { InvalidationRules } from './rules.ts';

/** What the cache needs from a supergraph: its entity keys, the types changed as a whole, the rules. */
export interface SchemaFacts {
  keys: ReadonlyMap<string, readonly string[] | null>;
  wholeTypes: ReadonlySet<string>;
  rules: InvalidationRules;
  /** `Type.field` of the `@volatile` fields: no event says when they change. */
  volatile: ReadonlySet<string>;
}

/** The parts of a supergraph the cache reads (at start and on a reload). */
export interface SupergraphInput {
  rules: InvalidationRules;
  /** Types events change as a whole (`@changedBy` without a key), e.g. a tenant's aggregates. */
  wholeTypes?: readonly string[];
  /** The composed supergraph: where the entity keys come from. */
  supergraphSdl: string;
}

/**
 * Flat entity keys from the supergraph's `@join__type(key:)`: type → key fields. Entities with
 * only nested keys (`id org { id }`) map to null: their results are tagged by type.
 */
export function entityKeys(supergraphSdl: string): Map<string, readonly string[] | null> {
  const keys = new Map<string, readonly string[] | null>();
  for (const definition of parseGraphQL(supergraphSdl).definitions) {
    if (definition.kind !== Kind.OBJECT_TYPE_DEFINITION && definition.kind !== Kind.OBJECT_TYPE_EXTENSION) continue;
    for (const directive of definition.directives ?? []) {
      if (directive.name.value !== 'join__type') continue;
      const key = directive.arguments?.find((a) => a.name.value === 'key')?.value;
      if (key?.kind !== Kind.STRING) continue;
      const fields = key.value.trim().split(/\s+/);
      const flat = fields.every((f) => /^[_A-Za-z][_0-9A-Za-z]*$/.test(f)) ? fields : null;
      if (!keys.get(definition.name.value)) keys.set(definition.name.value, flat);
    }
  }
  return keys;
}

/**
 * The facts of a supergraph, checked against the types to cache: each must have its changes
 * announced by an event, and be an entity or a type changed as a whole.
 * @throws ConfigError (key GATEWAY_CACHE_TYPES) listing every type that cannot be cached
 */
export function readFacts(types: ReadonlySet<string>, input: SupergraphInput): SchemaFacts {
  const keys = entityKeys(input.supergraphSdl);
  const wholeTypes = new Set(input.wholeTypes ?? []);
  const announced = new Set(Object.values(input.rules).flatMap((rule) => rule.types));
  const problems = [...types].flatMap((name) =>
    !announced.has(name)
      ? [`no event announces changes of ${name} (declare them with @changedBy in its subgraph), so it cannot be cached`]
      : !keys.has(name) && !wholeTypes.has(name)
        ? [`${name} is neither an entity (a type with @key) nor changed as a whole by any event`]
        : [],
  );
  if (problems.length > 0) throw new ConfigError(problems.map((message) => ({ key: 'GATEWAY_CACHE_TYPES', message })));
  return { keys, wholeTypes, rules: input.rules, volatile: new Set(readBindings(input.supergraphSdl).bindings.volatile) };
}
