/**
 * The Tributary events spec: how a subgraph declares, in its own SDL, which events feed its
 * subscriptions and which events change its types. Subgraphs `@link` the spec and compose the two
 * directives into the supergraph (`@composeDirective`); the gateway reads them from the
 * supergraph it loads and builds its subscriptions, queue bindings and cache invalidation from
 * them, so it needs no code of any subgraph's domain. `pnpm schema:check` validates every binding
 * against the API schema and the event contracts.
 *
 * Paths into an event's data are dotted (`job.id`); conditions are `<path> in [A, B]` or
 * `<path> = A`, compared as strings.
 */
import { getNamedType, isListType, isNonNullType, isObjectType, Kind, parse, validate, visit, type ConstDirectiveNode, type DocumentNode, type FieldNode, type GraphQLInputType, type GraphQLSchema, type ListTypeNode, type NamedTypeNode, type OperationDefinitionNode, type SelectionSetNode, type TypeNode, type ValueNode, type VariableDefinitionNode } from 'graphql';

export const EVENTS_SPEC_URL = 'https://specs.tributary.dev/events/v0.1';

/** The directives' definitions: every subgraph that uses the spec includes this text in its SDL. */
export const eventDirectiveDefinitions = `
  directive @eventSubscription(
    events: [String!]!
    match: [String!] = []
    where: String
    entity: String!
    key: String
    lookup: String!
    initial: Boolean = false
    send: String = "EVERY"
    state: String
    completeWhen: String
  ) on FIELD_DEFINITION

  directive @changedBy(event: String!, key: String) repeatable on OBJECT

  directive @volatile on FIELD_DEFINITION
`;

/**
 * What a subgraph adds to its `extend schema`: the spec's link and the two composed directives.
 * The federation link must import `@composeDirective`.
 */
export const eventsSpecLink = `@link(url: "${EVENTS_SPEC_URL}", import: ["@eventSubscription", "@changedBy", "@volatile"]) @composeDirective(name: "@eventSubscription") @composeDirective(name: "@changedBy") @composeDirective(name: "@volatile")`;

export type Path = readonly string[];

/** `<path> in [values]`: true when the value at the path, as a string, is one of them. */
export interface Condition {
  path: Path;
  values: readonly string[];
  text: string;
}

export type SendMode = 'EVERY' | 'CHANGES' | 'COMPLETION';
const SEND_MODES: readonly SendMode[] = ['EVERY', 'CHANGES', 'COMPLETION'];

/** One `@eventSubscription` on a Subscription field. */
export interface SubscriptionBinding {
  field: string;
  /** Event versions it listens to (`<type>/v<n>`). */
  events: readonly string[];
  /** Event data paths that must equal a field argument; none: every event of the tenant. */
  match: ReadonlyArray<{ path: Path; argument: string }>;
  /** Events whose data fails it are ignored, unread. */
  where: Condition | undefined;
  /** The type the events designate (the field's type). */
  entity: string;
  /** Path of the entity's key in the event's data (none: a tenant-wide value such as `Stats`). */
  key: Path | undefined;
  /** The root Query field the client's selection is resolved through, with its arguments: `$key` is the entity's key, `$<name>` a subscription argument. */
  lookup: FieldNode;
  /** The argument the key is bound to by `match`, when it is: then the entity is known at subscribe (read first, NOT_FOUND when null). */
  keyArgument: string | undefined;
  initial: boolean;
  send: SendMode;
  /** What CHANGES compares (default: the whole message). */
  state: SelectionSetNode | undefined;
  completeWhen: Condition | undefined;
}

/** One `@changedBy` on a type: the event says the type changed (the entity at `key`, or the whole type). */
export interface ChangeBinding {
  type: string;
  event: string;
  key: Path | undefined;
}

export interface Bindings {
  subscriptions: readonly SubscriptionBinding[];
  changes: readonly ChangeBinding[];
  /** `Type.field` of every `@volatile` field: its value changes with no event to say so (a queue position), so no result holding it is cached. */
  volatile: readonly string[];
}

/** A binding that cannot work. `code` is stable; `field` is `Type.field` or the type. */
export interface BindingProblem {
  code: BindingProblemCode;
  field: string;
  message: string;
}

export const BindingProblemCode = {
  /** An argument of a directive does not parse (path, condition, lookup, send, state). */
  INVALID_BINDING: 'INVALID_BINDING',
  /** `match` or `lookup` names an argument the subscription field does not have. */
  UNKNOWN_ARGUMENT: 'UNKNOWN_ARGUMENT',
  /** The lookup field does not exist, or does not return the entity. */
  LOOKUP_MISMATCH: 'LOOKUP_MISMATCH',
  /** The field's type is not the binding's entity, or the type is unknown or has no such key. */
  ENTITY_MISMATCH: 'ENTITY_MISMATCH',
  /** The event type or version is not in the contracts. */
  UNKNOWN_EVENT: 'UNKNOWN_EVENT',
  /** A path is not in the event's JSON schema. */
  PATH_NOT_IN_EVENT: 'PATH_NOT_IN_EVENT',
  /** A path's type in the event cannot be compared with what it is bound to. */
  PATH_TYPE_MISMATCH: 'PATH_TYPE_MISMATCH',
} as const;
export type BindingProblemCode = (typeof BindingProblemCode)[keyof typeof BindingProblemCode];

export class BindingError extends Error {
  override name = 'BindingError';
  constructor(readonly problems: readonly BindingProblem[]) {
    super(`invalid event bindings:\n${problems.map((p) => `  ${p.code} ${p.field}: ${p.message}`).join('\n')}`);
  }
}

const NAME = /^[_A-Za-z][_0-9A-Za-z]*$/;

export function parsePath(text: string): Path | undefined {
  const parts = text.trim().split('.');
  return parts.every((p) => NAME.test(p)) ? parts : undefined;
}

export function parseCondition(text: string): Condition | undefined {
  const found = /^\s*([^\s=]+)\s*(?:\bin\s*\[(.*)\]|=\s*(.+?))\s*$/s.exec(text);
  if (!found) return undefined;
  const path = parsePath(found[1]!);
  const raw = found[2] !== undefined ? found[2].split(',') : [found[3]!];
  const values = raw.map((v) => v.trim().replace(/^"(.*)"$/, '$1')).filter((v) => v !== '');
  if (!path || values.length === 0) return undefined;
  return { path, values, text: text.trim() };
}

/** The value at a path of a plain value, or undefined. */
export function valueAt(value: unknown, path: Path): unknown {
  let at = value;
  for (const part of path) {
    if (at === null || typeof at !== 'object' || Array.isArray(at)) return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}

/** A key or match value as the gateway compares it: strings, numbers and booleans, as a string. */
export function keyValue(value: unknown): string | undefined {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value)) ? String(value) : undefined;
}

export function conditionHolds(condition: Condition, value: unknown): boolean {
  const at = valueAt(value, condition.path);
  return (typeof at === 'string' || typeof at === 'number' || typeof at === 'boolean') && condition.values.includes(String(at));
}

/** The routing key of an event version: `job.updated/v1` → `job.updated`. */
export const eventTypeOf = (dataschema: string) => dataschema.replace(/\/v\d+$/, '');

type Args = Record<string, ValueNode>;
const argsOf = (directive: ConstDirectiveNode): Args => Object.fromEntries((directive.arguments ?? []).map((a) => [a.name.value, a.value]));
const str = (v: ValueNode | undefined): string | undefined => (v?.kind === Kind.STRING ? v.value : undefined);
const strList = (v: ValueNode | undefined): string[] | undefined =>
  v === undefined ? undefined : v.kind === Kind.LIST ? (v.values.every((x) => x.kind === Kind.STRING) ? v.values.map((x) => (x as { value: string }).value) : undefined) : v.kind === Kind.STRING ? [v.value] : undefined;

/**
 * The bindings an SDL declares (a subgraph's or the supergraph), and the problems found in the
 * directives themselves. What they refer to is checked by {@link checkBindings}.
 */
export function readBindings(sdl: string | DocumentNode): { bindings: Bindings; problems: BindingProblem[] } {
  const document = typeof sdl === 'string' ? parse(sdl) : sdl;
  const subscriptions: SubscriptionBinding[] = [];
  const changes: ChangeBinding[] = [];
  const volatile: string[] = [];
  const problems: BindingProblem[] = [];
  const subscriptionType = subscriptionTypeName(document);
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OBJECT_TYPE_DEFINITION && definition.kind !== Kind.OBJECT_TYPE_EXTENSION) continue;
    const typeName = definition.name.value;
    for (const field of definition.fields ?? []) {
      if (field.directives?.some((d) => d.name.value === 'volatile')) volatile.push(`${typeName}.${field.name.value}`);
    }
    for (const directive of definition.directives ?? []) {
      if (directive.name.value !== 'changedBy') continue;
      const args = argsOf(directive);
      const event = str(args.event);
      const keyText = str(args.key);
      const key = keyText === undefined ? undefined : parsePath(keyText);
      if (!event) problems.push({ code: 'INVALID_BINDING', field: typeName, message: '@changedBy needs `event`' });
      else if (keyText !== undefined && !key) problems.push({ code: 'INVALID_BINDING', field: typeName, message: `@changedBy key "${keyText}" is not a dotted path` });
      else changes.push({ type: typeName, event, key });
    }
    if (typeName !== subscriptionType) continue;
    for (const field of definition.fields ?? []) {
      const directive = field.directives?.find((d) => d.name.value === 'eventSubscription');
      if (!directive) continue;
      const where = `${typeName}.${field.name.value}`;
      const fail = (message: string) => problems.push({ code: 'INVALID_BINDING', field: where, message });
      const args = argsOf(directive);
      const events = strList(args.events);
      const entity = str(args.entity);
      const lookupText = str(args.lookup);
      if (!events?.length) fail('`events` names no event');
      if (!entity) fail('`entity` is missing');
      let lookup: FieldNode | undefined;
      try {
        const op = parse(`{ ${lookupText ?? ''} }`).definitions[0] as OperationDefinitionNode;
        const only = op.selectionSet.selections;
        if (only.length === 1 && only[0]!.kind === Kind.FIELD && !only[0]!.selectionSet && !only[0]!.alias) lookup = only[0];
      } catch {
        /* reported below */
      }
      if (!lookup) fail(`\`lookup\` "${lookupText ?? ''}" is not one root field with arguments, e.g. "job(id: $key)"`);
      const match: { path: Path; argument: string }[] = [];
      for (const text of strList(args.match) ?? []) {
        const found = /^\s*([^\s=]+)\s*=\s*\$([_A-Za-z][_0-9A-Za-z]*)\s*$/.exec(text);
        const path = found && parsePath(found[1]!);
        if (!found || !path) fail(`\`match\` "${text}" is not "<data path> = $<argument>"`);
        else match.push({ path, argument: found[2]! });
      }
      const keyText = str(args.key);
      const key = keyText === undefined ? undefined : parsePath(keyText);
      if (keyText !== undefined && !key) fail(`\`key\` "${keyText}" is not a dotted path`);
      const conditionOf = (name: 'where' | 'completeWhen') => {
        const text = str(args[name]);
        if (text === undefined) return undefined;
        const condition = parseCondition(text);
        if (!condition) fail(`\`${name}\` "${text}" is not "<path> in [A, B]" or "<path> = A"`);
        return condition;
      };
      const whereCondition = conditionOf('where');
      const completeWhen = conditionOf('completeWhen');
      const sendText = str(args.send) ?? 'EVERY';
      const send = SEND_MODES.find((m) => m === sendText);
      if (!send) fail(`\`send\` "${sendText}" is not one of ${SEND_MODES.join(', ')}`);
      if (send === 'COMPLETION' && !completeWhen) fail('`send: "COMPLETION"` needs `completeWhen`');
      let state: SelectionSetNode | undefined;
      const stateText = str(args.state);
      if (stateText !== undefined) {
        try {
          state = (parse(`{ ${stateText} }`).definitions[0] as OperationDefinitionNode).selectionSet;
        } catch {
          fail(`\`state\` "${stateText}" is not a selection`);
        }
      }
      const initial = args.initial?.kind === Kind.BOOLEAN ? args.initial.value : false;
      if (!events?.length || !entity || !lookup || !send) continue;
      const keyArgument = key ? match.find((m) => m.path.join('.') === key.join('.'))?.argument : undefined;
      const usesKey = variablesOf(lookup).includes('key');
      if (usesKey && !key) fail('`lookup` uses $key but the binding has no `key`');
      if (!usesKey && key) fail('`key` is given but `lookup` does not use $key');
      // Without its key at subscribe, the stream has nothing to read first.
      if (initial && usesKey && !keyArgument) fail('`initial: true` needs the key known at subscribe: `lookup` without $key, or `match` binding the key path to an argument');
      subscriptions.push({ field: field.name.value, events, match, where: whereCondition, entity, key, lookup, keyArgument, initial, send, state, completeWhen });
    }
  }
  return { bindings: { subscriptions, changes, volatile }, problems };
}

function subscriptionTypeName(document: DocumentNode): string {
  for (const d of document.definitions) {
    if (d.kind !== Kind.SCHEMA_DEFINITION && d.kind !== Kind.SCHEMA_EXTENSION) continue;
    const op = d.operationTypes?.find((o) => o.operation === 'subscription');
    if (op) return op.type.name.value;
  }
  return 'Subscription';
}

function variablesOf(field: FieldNode): string[] {
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
