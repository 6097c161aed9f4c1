import { getNamedType, isNonNullType, isObjectType, Kind, validate, type GraphQLSchema } from 'graphql';
import type { BindingProblem, BindingProblemCode, Bindings } from './model.ts';
import { lookupQuery, variablesOf } from './query.ts';

/**
 * What a binding refers to in the API schema: the field's arguments, its type, the lookup and
 * the state and completion paths (by validating the query a message is resolved with); and that
 * `@changedBy` names types that exist, with a key only on entities (`keys`: type → key fields).
 */
export function checkBindings(bindings: Bindings, schema: GraphQLSchema, keys: ReadonlyMap<string, readonly string[] | null>): BindingProblem[] {
  const problems: BindingProblem[] = [];
  const subscriptionType = schema.getSubscriptionType();
  for (const b of bindings.subscriptions) {
    const where = `${subscriptionType?.name ?? 'Subscription'}.${b.field}`;
    const add = (code: BindingProblemCode, message: string) => problems.push({ code, field: where, message });
    const field = subscriptionType?.getFields()[b.field];
    if (!field) {
      add('ENTITY_MISMATCH', 'no such subscription field in the API schema');
      continue;
    }
    const fieldType = getNamedType(field.type);
    if (fieldType.name !== b.entity) add('ENTITY_MISMATCH', `the field returns ${fieldType.name}, not the entity ${b.entity}`);
    const argNames = new Set(field.args.map((a) => a.name));
    for (const m of b.match) if (!argNames.has(m.argument)) add('UNKNOWN_ARGUMENT', `\`match\` names $${m.argument}, which ${b.field} has no argument of`);
    for (const name of variablesOf(b.lookup)) if (name !== 'key' && !argNames.has(name)) add('UNKNOWN_ARGUMENT', `\`lookup\` names $${name}, which ${b.field} has no argument of`);
    const lookup = schema.getQueryType()?.getFields()[b.lookup.name.value];
    if (!lookup) {
      add('LOOKUP_MISMATCH', `\`lookup\` ${b.lookup.name.value} is not a Query field`);
      continue;
    }
    const lookupType = isNonNullType(lookup.type) ? lookup.type.ofType : lookup.type;
    if (!isObjectType(lookupType) || lookupType.name !== b.entity) add('LOOKUP_MISMATCH', `\`lookup\` ${b.lookup.name.value} returns ${String(lookup.type)}, not the entity ${b.entity}`);
    for (const a of b.lookup.arguments ?? []) {
      const def = lookup.args.find((x) => x.name === a.name.value);
      if (!def) add('LOOKUP_MISMATCH', `\`lookup\` ${b.lookup.name.value} has no argument ${a.name.value}`);
      else if (a.value.kind === Kind.VARIABLE && a.value.name.value !== 'key') {
        const source = field.args.find((x) => x.name === (a.value as { name: { value: string } }).name.value);
        if (source && getNamedType(source.type).name !== getNamedType(def.type).name) add('UNKNOWN_ARGUMENT', `$${source.name} is ${String(source.type)}, the lookup's ${def.name} takes ${String(def.type)}`);
      }
    }
    for (const def of lookup.args) if (isNonNullType(def.type) && def.defaultValue === undefined && !b.lookup.arguments?.some((a) => a.name.value === def.name)) add('LOOKUP_MISMATCH', `\`lookup\` leaves the required argument ${def.name} of ${b.lookup.name.value} unset`);
    if (problems.some((p) => p.field === where)) continue;
    const query = lookupQuery(b, schema, undefined);
    for (const error of validate(schema, query)) add('INVALID_BINDING', `\`state\` or \`completeWhen\` selects what ${b.entity} does not have: ${error.message}`);
  }
  for (const c of bindings.changes) {
    const type = schema.getType(c.type);
    if (!type) continue; // an inaccessible or removed type: nothing to cache
    if (c.key && !keys.get(c.type)) problems.push({ code: 'ENTITY_MISMATCH', field: c.type, message: `@changedBy(key:) on ${c.type}, which is not an entity with a flat @key; omit \`key\` to change the whole type` });
    else if (c.key && keys.get(c.type)!.length !== 1) problems.push({ code: 'ENTITY_MISMATCH', field: c.type, message: `${c.type} has a compound key; @changedBy(key:) takes one path` });
  }
  return problems;
}
