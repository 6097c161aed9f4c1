import { Kind, parse, type ConstDirectiveNode, type DocumentNode, type FieldDefinitionNode, type FieldNode, type ObjectTypeDefinitionNode, type ObjectTypeExtensionNode, type OperationDefinitionNode, type SelectionSetNode, type ValueNode } from 'graphql';
import { parseCondition, parsePath, SEND_MODES, type BindingProblem, type Bindings, type ChangeBinding, type Condition, type Path, type SubscriptionBinding } from './model.ts';
import { variablesOf } from './query.ts';

type Args = Record<string, ValueNode>;
const argsOf = (directive: ConstDirectiveNode): Args => Object.fromEntries((directive.arguments ?? []).map((a) => [a.name.value, a.value]));
const str = (v: ValueNode | undefined): string | undefined => (v?.kind === Kind.STRING ? v.value : undefined);
const strList = (v: ValueNode | undefined): string[] | undefined =>
  v === undefined ? undefined : v.kind === Kind.LIST ? (v.values.every((x) => x.kind === Kind.STRING) ? v.values.map((x) => (x as { value: string }).value) : undefined) : v.kind === Kind.STRING ? [v.value] : undefined;

type ObjectDefinition = ObjectTypeDefinitionNode | ObjectTypeExtensionNode;
/** Reports a problem of the binding being read. */
type Fail = (message: string) => void;

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
    readChangedBy(definition, changes, problems);
    if (typeName !== subscriptionType) continue;
    for (const field of definition.fields ?? []) {
      const directive = field.directives?.find((d) => d.name.value === 'eventSubscription');
      if (!directive) continue;
      const where = `${typeName}.${field.name.value}`;
      const binding = readSubscription(field, argsOf(directive), (message) => problems.push({ code: 'INVALID_BINDING', field: where, message }));
      if (binding) subscriptions.push(binding);
    }
  }
  return { bindings: { subscriptions, changes, volatile }, problems };
}

/** A type's `@changedBy` directives. */
function readChangedBy(definition: ObjectDefinition, changes: ChangeBinding[], problems: BindingProblem[]): void {
  const typeName = definition.name.value;
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
}

/** One Subscription field's `@eventSubscription`, or undefined when it cannot work (each problem reported, in the arguments' order). */
function readSubscription(field: FieldDefinitionNode, args: Args, fail: Fail): SubscriptionBinding | undefined {
  const events = strList(args.events);
  const entity = str(args.entity);
  if (!events?.length) fail('`events` names no event');
  if (!entity) fail('`entity` is missing');
  const lookupText = str(args.lookup);
  const lookup = parseLookup(lookupText);
  if (!lookup) fail(`\`lookup\` "${lookupText ?? ''}" is not one root field with arguments, e.g. "job(id: $key)"`);
  const match = readMatch(args, fail);
  const keyText = str(args.key);
  const key = keyText === undefined ? undefined : parsePath(keyText);
  if (keyText !== undefined && !key) fail(`\`key\` "${keyText}" is not a dotted path`);
  const whereCondition = readCondition(args, 'where', fail);
  const completeWhen = readCondition(args, 'completeWhen', fail);
  const sendText = str(args.send) ?? 'EVERY';
  const send = SEND_MODES.find((m) => m === sendText);
  if (!send) fail(`\`send\` "${sendText}" is not one of ${SEND_MODES.join(', ')}`);
  if (send === 'COMPLETION' && !completeWhen) fail('`send: "COMPLETION"` needs `completeWhen`');
  const state = readState(args, fail);
  const initial = args.initial?.kind === Kind.BOOLEAN ? args.initial.value : false;
  if (!events?.length || !entity || !lookup || !send) return undefined;
  const keyArgument = key ? match.find((m) => m.path.join('.') === key.join('.'))?.argument : undefined;
  const usesKey = variablesOf(lookup).includes('key');
  if (usesKey && !key) fail('`lookup` uses $key but the binding has no `key`');
  if (!usesKey && key) fail('`key` is given but `lookup` does not use $key');
  // Without its key at subscribe, the stream has nothing to read first.
  if (initial && usesKey && !keyArgument) fail('`initial: true` needs the key known at subscribe: `lookup` without $key, or `match` binding the key path to an argument');
  return { field: field.name.value, events, match, where: whereCondition, entity, key, lookup, keyArgument, initial, send, state, completeWhen };
}

/** `lookup`: one root field with arguments and no selection or alias, e.g. `job(id: $key)`; undefined for anything else. */
function parseLookup(text: string | undefined): FieldNode | undefined {
  try {
    const op = parse(`{ ${text ?? ''} }`).definitions[0] as OperationDefinitionNode;
    const only = op.selectionSet.selections;
    if (only.length === 1 && only[0]!.kind === Kind.FIELD && !only[0]!.selectionSet && !only[0]!.alias) return only[0];
  } catch {
    /* reported by the caller */
  }
  return undefined;
}

/** `match`: `<data path> = $<argument>` entries. */
function readMatch(args: Args, fail: Fail): { path: Path; argument: string }[] {
  const match: { path: Path; argument: string }[] = [];
  for (const text of strList(args.match) ?? []) {
    const found = /^\s*([^\s=]+)\s*=\s*\$([_A-Za-z][_0-9A-Za-z]*)\s*$/.exec(text);
    const path = found && parsePath(found[1]!);
    if (!found || !path) fail(`\`match\` "${text}" is not "<data path> = $<argument>"`);
    else match.push({ path, argument: found[2]! });
  }
  return match;
}

/** `where` or `completeWhen`, when given. */
function readCondition(args: Args, name: 'where' | 'completeWhen', fail: Fail): Condition | undefined {
  const text = str(args[name]);
  if (text === undefined) return undefined;
  const condition = parseCondition(text);
  if (!condition) fail(`\`${name}\` "${text}" is not "<path> in [A, B]" or "<path> = A"`);
  return condition;
}

/** `state`: a selection, when given. */
function readState(args: Args, fail: Fail): SelectionSetNode | undefined {
  const text = str(args.state);
  if (text === undefined) return undefined;
  try {
    return (parse(`{ ${text} }`).definitions[0] as OperationDefinitionNode).selectionSet;
  } catch {
    fail(`\`state\` "${text}" is not a selection`);
    return undefined;
  }
}

function subscriptionTypeName(document: DocumentNode): string {
  for (const d of document.definitions) {
    if (d.kind !== Kind.SCHEMA_DEFINITION && d.kind !== Kind.SCHEMA_EXTENSION) continue;
    const op = d.operationTypes?.find((o) => o.operation === 'subscription');
    if (op) return op.type.name.value;
  }
  return 'Subscription';
}
