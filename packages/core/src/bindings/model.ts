import type { FieldNode, SelectionSetNode } from 'graphql';

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
export const SEND_MODES: readonly SendMode[] = ['EVERY', 'CHANGES', 'COMPLETION'];

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
