import { isListType, isNonNullType, Kind, visit, type DocumentNode, type FieldNode, type GraphQLInputType, type GraphQLSchema, type ListTypeNode, type NamedTypeNode, type OperationDefinitionNode, type TypeNode, type ValueNode, type VariableDefinitionNode } from 'graphql';
import type { Path, SubscriptionBinding } from './model.ts';

/** The variables a lookup's arguments name (`key` among them when it reads the entity's key). */
export function variablesOf(field: FieldNode): string[] {
  return (field.arguments ?? []).flatMap((a) => (a.value.kind === Kind.VARIABLE ? [a.value.name.value] : []));
}

/** The variable the gateway passes the entity's key in. */
export const KEY_VARIABLE = '_tributaryKey';
/** Prefix of the aliases the gateway adds to a selection to read `state` and `completeWhen`, removed from each message. */
export const HIDDEN_PREFIX = '_tributary_';

/**
 * The query a subscription message is resolved with: the binding's lookup under the client's
 * response key, with the client's selection (or `selection`) and the hidden fields `state` and
 * `completeWhen` read. Client variables the query no longer uses are dropped.
 */
export function lookupQuery(
  binding: SubscriptionBinding,
  schema: GraphQLSchema,
  client: { operation: OperationDefinitionNode; field: FieldNode; fragments: readonly DocumentNode['definitions'][number][] } | undefined,
): DocumentNode {
  const queryType = schema.getQueryType();
  const lookupField = queryType?.getFields()[binding.lookup.name.value];
  const subscriptionField = schema.getSubscriptionType()?.getFields()[binding.field];
  const clientArgs = new Map((client?.field.arguments ?? []).map((a) => [a.name.value, a.value]));
  const keyArg = lookupField?.args.find((a) => binding.lookup.arguments?.some((x) => x.name.value === a.name && x.value.kind === Kind.VARIABLE && x.value.name.value === 'key'));
  const variable = (name: string): ValueNode => ({ kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: name } });
  // Without a client (a check), subscription arguments are passed as variables of their own.
  const argumentVariables: VariableDefinitionNode[] = [];
  const args = (binding.lookup.arguments ?? []).map((a) => {
    if (a.value.kind !== Kind.VARIABLE) return a;
    const name = a.value.name.value;
    if (name === 'key') return { ...a, value: variable(KEY_VARIABLE) };
    if (client) {
      // The client's own value (literal or variable), or the argument's default.
      const given = clientArgs.get(name);
      const fallback = subscriptionField?.args.find((x) => x.name === name)?.astNode?.defaultValue;
      return { ...a, value: given ?? fallback ?? { kind: Kind.NULL } };
    }
    const source = subscriptionField?.args.find((x) => x.name === name);
    if (source) argumentVariables.push({ kind: Kind.VARIABLE_DEFINITION, variable: variable(name) as VariableDefinitionNode['variable'], type: typeNode(source.type) });
    return a;
  });
  const hidden = hiddenSelections(binding);
  const selections = [...(client?.field.selectionSet?.selections ?? []), ...hidden];
  if (selections.length === 0) selections.push({ kind: Kind.FIELD, name: { kind: Kind.NAME, value: '__typename' } });
  const root = {
    kind: Kind.FIELD,
    alias: { kind: Kind.NAME, value: client ? (client.field.alias?.value ?? client.field.name.value) : binding.field },
    name: { kind: Kind.NAME, value: binding.lookup.name.value },
    arguments: args as FieldNode['arguments'],
    ...(client?.field.directives ? { directives: client.field.directives } : {}),
    selectionSet: { kind: Kind.SELECTION_SET, selections },
  } as FieldNode;
  const keyDefinition: VariableDefinitionNode[] = keyArg
    ? [{ kind: Kind.VARIABLE_DEFINITION, variable: { kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: KEY_VARIABLE } }, type: typeNode(keyArg.type) }]
    : [];
  const operation: OperationDefinitionNode = {
    kind: Kind.OPERATION_DEFINITION,
    operation: 'query' as OperationDefinitionNode['operation'],
    ...(client?.operation.name ? { name: client.operation.name } : {}),
    selectionSet: { kind: Kind.SELECTION_SET, selections: [root] },
  };
  // A variable only the subscription field used is unused here, which the validator refuses.
  const used = new Set<string>();
  visit({ kind: Kind.DOCUMENT, definitions: [operation, ...(client?.fragments ?? [])] }, { Variable: (node) => void used.add(node.name.value) });
  const variableDefinitions = [...(client?.operation.variableDefinitions ?? []).filter((v) => used.has(v.variable.name.value)), ...argumentVariables, ...keyDefinition];
  return { kind: Kind.DOCUMENT, definitions: [{ ...operation, variableDefinitions }, ...(client?.fragments ?? [])] };
}

function typeNode(type: GraphQLInputType): TypeNode {
  if (isNonNullType(type)) return { kind: Kind.NON_NULL_TYPE, type: typeNode(type.ofType) as NamedTypeNode | ListTypeNode };
  if (isListType(type)) return { kind: Kind.LIST_TYPE, type: typeNode(type.ofType as GraphQLInputType) };
  return { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: type.name } };
}

/** `state` and the `completeWhen` path, each top field aliased `_tributary_<name>`. */
function hiddenSelections(binding: SubscriptionBinding): FieldNode[] {
  const fields: FieldNode[] = [];
  const alias = (field: FieldNode): FieldNode => ({ ...field, alias: { kind: Kind.NAME, value: HIDDEN_PREFIX + field.name.value } });
  for (const s of binding.state?.selections ?? []) if (s.kind === Kind.FIELD) fields.push(alias(s));
  if (binding.completeWhen) fields.push(alias(pathField(binding.completeWhen.path)));
  return fields;
}

function pathField(path: Path): FieldNode {
  const [head, ...rest] = path;
  return { kind: Kind.FIELD, name: { kind: Kind.NAME, value: head! }, ...(rest.length ? { selectionSet: { kind: Kind.SELECTION_SET, selections: [pathField(rest)] } } : {}) };
}

/**
 * Remove the hidden fields from a resolved value and return them under their own names:
 * what `state` and `completeWhen` are read from.
 */
export function takeHidden(value: Record<string, unknown>): Record<string, unknown> {
  const hidden: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    if (!key.startsWith(HIDDEN_PREFIX)) continue;
    hidden[key.slice(HIDDEN_PREFIX.length)] = value[key];
    delete value[key];
  }
  return hidden;
}

