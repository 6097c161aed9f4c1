import { getNamedType, isObjectType, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { SchemaFacts } from './facts.ts';
import { isUncacheable, openOperation } from './plan.ts';
import type { EntityChange } from './rules.ts';
import { changesOfTags, collectTags } from './tags.ts';

/**
 * What a mutation's result says it changed: its identified entities, or their types (so a client
 * reads its own writes without waiting for the event).
 * @throws Error when the result's selection cannot be read (a field of an abstract type)
 */
export function mutationChanges(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  facts: SchemaFacts,
  types: ReadonlySet<string>,
  data: Record<string, unknown>,
): EntityChange[] {
  const opened = openOperation(schema, document, operationName, facts, types, false);
  if (!opened) return [];
  const { operation, root, planner } = opened;
  const tags: string[] = [];
  for (const [responseKey, nodes] of planner.collect([operation.selectionSet], root)) {
    const field = root.getFields()[nodes[0]!.name.value];
    const type = field && getNamedType(field.type);
    if (!type || !isObjectType(type)) continue;
    const shape = planner.shape(nodes, type, new Set(), false);
    // What the mutation changed cannot be told: fail rather than keep results it may have made stale.
    if (isUncacheable(shape)) throw new Error(shape.reason);
    collectTags(data[responseKey], shape, tags, false);
  }
  return changesOfTags(tags);
}
