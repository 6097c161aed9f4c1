/**
 * The event-binding step of `pnpm schema:check`: every `@eventSubscription` and `@changedBy` of
 * every subgraph (Tributary events spec, `@tributary/core/bindings`) checked against the API
 * schema the gateway serves and against the event contracts. The gateway refuses a broken binding
 * at start; this finds it in CI, with the subgraph that declares it.
 */
import { checkBindings, readBindings, type BindingProblem, type Path, type SubscriptionBinding } from '@tributary/core/bindings';
import type { DocumentNode, GraphQLInputType, GraphQLSchema } from 'graphql';
import type { z } from 'zod';
import { deref, eventSnapshot, isSchema, variants, type JsonSchema } from './events.ts';
import { graphql } from './graphql-js.ts';
import type { Violation } from './report.ts';

const { getNamedType, isEnumType, isListType, isNonNullType, isScalarType, Kind, parse } = graphql;

/** The inputs of the binding check; the composition step has all three. */
export interface BindingSources {
  /** Each subgraph's SDL by name, as it serves it (`_service { sdl }`). */
  sdls: Readonly<Record<string, string>>;
  /** The composed API schema (`apiSchema(supergraphSdl)`): what lookups, arguments and selections are checked against. */
  schema: GraphQLSchema;
  /** Event contracts by `dataschema` (`job.updated/v1`); paths are resolved in their JSON Schema (input side). */
  contracts: Readonly<Record<string, z.ZodType>>;
}

export interface BindingReport {
  /** One per problem, code `INVALID_EVENT_BINDING`, the binding problem's code in `detail`. */
  violations: Violation[];
  /** How many `@eventSubscription` and `@changedBy` bindings were read. */
  subscriptions: number;
  changes: number;
}

/**
 * Checks every binding of every subgraph: the directives themselves ({@link readBindings}), what
 * they name in the API schema ({@link checkBindings}: arguments, lookup, entity, `state` and
 * `completeWhen`), and each event they name: its version is in the contracts, and every data path
 * (`match`, `where`, `key`) exists in its JSON Schema with a type that can be compared with what it
 * is bound to. Every problem is reported, not only the first one of a binding.
 */
export function checkEventBindings({ sdls, schema, contracts }: BindingSources): BindingReport {
  const documents = Object.entries(sdls).map(([name, sdl]) => [name, parse(sdl)] as const);
  const keys = entityKeysOf(documents.map(([, doc]) => doc));
  const events = new EventSchemas(contracts);
  const violations: Violation[] = [];
  let subscriptions = 0;
  let changes = 0;
  for (const [subgraph, document] of documents) {
    const { bindings, problems } = readBindings(document);
    subscriptions += bindings.subscriptions.length;
    changes += bindings.changes.length;
    const found: Array<BindingProblem & { event?: string }> = [...problems, ...checkBindings(bindings, schema, keys)];
    const subscriptionType = schema.getSubscriptionType()?.name ?? 'Subscription';
    for (const b of bindings.subscriptions) found.push(...subscriptionPathProblems(b, `${subscriptionType}.${b.field}`, schema, events));
    for (const c of bindings.changes) {
      const contract = events.lookup(c.event);
      if ('problem' in contract) {
        found.push({ code: 'UNKNOWN_EVENT', field: c.type, event: c.event, message: `@changedBy(event: "${c.event}"): ${contract.problem}` });
        continue;
      }
      if (!c.key) continue;
      const target = changedByKeyTarget(c.type, schema, keys);
      const problem = pathProblem(contract.schema, c.key, target, `@changedBy key ${c.key.join('.')}`, c.event);
      if (problem) found.push({ ...problem, field: c.type, event: c.event });
    }
    for (const p of found)
      violations.push({
        code: 'INVALID_EVENT_BINDING',
        detail: p.code,
        subgraphs: [subgraph],
        coordinate: p.field,
        ...(p.event === undefined ? {} : { event: p.event }),
        message: p.message,
      });
  }
  return { violations, subscriptions, changes };
}

/** The event problems of one `@eventSubscription`: each event version, and each path in each event. */
function subscriptionPathProblems(b: SubscriptionBinding, field: string, schema: GraphQLSchema, events: EventSchemas): Array<BindingProblem & { event: string }> {
  const out: Array<BindingProblem & { event: string }> = [];
  const args = schema.getSubscriptionType()?.getFields()[b.field]?.args ?? [];
  const lookup = schema.getQueryType()?.getFields()[b.lookup.name.value];
  const keyArgument = b.lookup.arguments?.find((a) => a.value.kind === Kind.VARIABLE && a.value.name.value === 'key');
  const keyArgumentDef = keyArgument && lookup?.args.find((a) => a.name === keyArgument.name.value);
  for (const event of b.events) {
    const contract = events.lookup(event);
    if ('problem' in contract) {
      out.push({ code: 'UNKNOWN_EVENT', field, event, message: `\`events\` names ${event}: ${contract.problem}` });
      continue;
    }
    const check = (path: Path, target: Target, role: string) => {
      const problem = pathProblem(contract.schema, path, target, role, event);
      if (problem) out.push({ ...problem, field, event });
    };
    for (const m of b.match) {
      const arg = args.find((a) => a.name === m.argument);
      // An argument the field does not have is UNKNOWN_ARGUMENT (checkBindings); the path must still exist.
      check(m.path, arg ? graphqlTarget(arg.type, `$${arg.name} (${String(arg.type)})`) : anyScalar, `\`match\` path ${m.path.join('.')}`);
    }
    if (b.where) check(b.where.path, anyScalar, `\`where\` path ${b.where.path.join('.')}`);
    if (b.key) {
      const target = keyArgumentDef ? graphqlTarget(keyArgumentDef.type, `the key argument ${b.lookup.name.value}(${keyArgumentDef.name}: ${String(keyArgumentDef.type)})`) : keyTarget;
      check(b.key, target, `\`key\` path ${b.key.join('.')}`);
    }
  }
  return out;
}

/** What a `@changedBy` key must be comparable with: the entity's key field when it has one, else a key value. */
function changedByKeyTarget(type: string, schema: GraphQLSchema, keys: ReadonlyMap<string, readonly string[] | null>): Target {
  const [keyField, ...more] = keys.get(type) ?? [];
  const named = schema.getType(type);
  const def = keyField !== undefined && more.length === 0 && named && 'getFields' in named ? named.getFields()[keyField] : undefined;
  return def ? graphqlTarget(def.type as GraphQLInputType, `the key ${type}.${def.name} (${String(def.type)})`) : keyTarget;
}

/** The JSON types a path may have, and how to name them in a message. */
interface Target {
  accepts: ReadonlySet<string> | 'any-scalar' | 'none';
  description: string;
}

const SCALARS = new Set(['string', 'number', 'integer', 'boolean']);
const anyScalar: Target = { accepts: 'any-scalar', description: 'a condition, compared with a string, number or boolean' };
/** The gateway compares keys as strings, from a string or a number; an integer, so it reads the same everywhere. */
const keyTarget: Target = { accepts: new Set(['string', 'integer']), description: 'an entity key (string or integer)' };

/**
 * The JSON types an event value may have to equal a GraphQL value of `type`: the gateway compares
 * both as strings, so an ID or String argument matches a string or an integer, an Int only an
 * integer, a Float any number, a Boolean a boolean, an enum a string; a custom scalar any scalar.
 * A list or input object never equals one event value.
 */
export function graphqlTarget(type: GraphQLInputType, description: string): Target {
  const inner = isNonNullType(type) ? type.ofType : type;
  if (isListType(inner)) return { accepts: 'none', description: `${description}, a list, which no single event value equals` };
  const named = getNamedType(inner);
  if (isEnumType(named)) return { accepts: new Set(['string']), description: `${description}, compared with a string` };
  if (!isScalarType(named)) return { accepts: 'none', description: `${description}, an input object, which no single event value equals` };
  const accepts: Record<string, readonly string[]> = { ID: ['string', 'integer'], String: ['string', 'integer'], Int: ['integer'], Float: ['number', 'integer'], Boolean: ['boolean'] };
  const types = accepts[named.name];
  if (!types) return { accepts: 'any-scalar', description: `${description}, compared with a string, number or boolean` };
  return { accepts: new Set(types), description: `${description}, compared with ${types.join(' or ')}` };
}

/** Where a path leads in a JSON Schema: the types of the value there, or the first part that is missing. */
export type PathResolution =
  | { found: true; types: ReadonlySet<string> }
  | { found: false; missing: string; at: string; available: readonly string[]; throughArray: boolean };

/**
 * Resolves a dotted path in a JSON Schema as the gateway reads event data (`valueAt`): through
 * object properties only (never into an array), following `$ref`, `anyOf`/`oneOf` (nullable and
 * optional values, unions) and `allOf`. A part exists when any branch has it; the types at the
 * end are those of every branch that leads there, `any` for a branch that says nothing (e.g.
 * `z.unknown()`), `null` included when a branch is nullable.
 */
export function resolvePath(root: JsonSchema, path: Path): PathResolution {
  let current: JsonSchema[] = [root];
  for (const [i, part] of path.entries()) {
    const next: JsonSchema[] = [];
    const available = new Set<string>();
    let throughArray = false;
    for (const v of current.flatMap((s) => branches(s, root))) {
      const props = isSchema(v['properties']) ? v['properties'] : undefined;
      for (const k of Object.keys(props ?? {})) available.add(k);
      const prop = props?.[part];
      if (isSchema(prop)) next.push(prop);
      // A record (`z.record`): any key may be present.
      else if (isSchema(v['additionalProperties'])) next.push(v['additionalProperties']);
      if (v['type'] === 'array' || 'items' in v) throughArray = true;
    }
    if (next.length === 0) return { found: false, missing: path.slice(0, i + 1).join('.'), at: i === 0 ? '$' : path.slice(0, i).join('.'), available: [...available].sort(), throughArray };
    current = next;
  }
  const types = new Set<string>();
  for (const v of current.flatMap((s) => branches(s, root))) for (const t of typesOf(v)) types.add(t);
  return { found: true, types };
}

/** {@link variants}, with the members of an `allOf` (an intersection: each one's properties exist). */
function branches(s: JsonSchema, root: JsonSchema, depth = 0): JsonSchema[] {
  return variants(s, root).flatMap((v) => {
    const all = deref(v, root)['allOf'];
    return Array.isArray(all) && depth < 16 ? [v, ...all.filter(isSchema).flatMap((m) => branches(m, root, depth + 1))] : [v];
  });
}

function typesOf(v: JsonSchema): string[] {
  if (typeof v['type'] === 'string') return [v['type']];
  const values = Array.isArray(v['enum']) ? v['enum'] : 'const' in v ? [v['const']] : undefined;
  if (values) return values.map((x) => (x === null ? 'null' : Array.isArray(x) ? 'array' : typeof x === 'number' ? (Number.isInteger(x) ? 'integer' : 'number') : typeof x));
  // A branch that only combines others (allOf) adds no type of its own.
  if (Array.isArray(v['allOf'])) return [];
  return ['any'];
}

/** The problem of a path in an event, or undefined when the event has it with a comparable type. */
function pathProblem(event: JsonSchema, path: Path, target: Target, role: string, dataschema: string): Omit<BindingProblem, 'field'> | undefined {
  const resolved = resolvePath(event, path);
  if (!resolved.found) {
    const why = resolved.throughArray
      ? `${resolved.at} is an array in ${dataschema}, and paths go through objects only`
      : `${dataschema} has no ${resolved.missing}${resolved.available.length ? ` (${resolved.at} has ${resolved.available.join(', ')})` : ''}`;
    return { code: 'PATH_NOT_IN_EVENT', message: `${role} is not in the event: ${why}` };
  }
  const types = [...resolved.types].filter((t) => t !== 'null');
  if (types.includes('any')) return undefined; // nothing to compare: the contract does not say
  const accepted = (t: string) => (target.accepts === 'any-scalar' ? SCALARS.has(t) : target.accepts === 'none' ? false : target.accepts.has(t));
  const shown = [...resolved.types].sort().join(' | ');
  if (types.length === 0) return { code: 'PATH_TYPE_MISMATCH', message: `${role} is always null in ${dataschema}; it is bound to ${target.description}` };
  const wrong = types.filter((t) => !accepted(t));
  if (wrong.length === 0) return undefined;
  return { code: 'PATH_TYPE_MISMATCH', message: `${role} is ${shown} in ${dataschema}; it is bound to ${target.description}` };
}

/** The contracts' JSON Schemas, converted once each. */
class EventSchemas {
  private readonly schemas = new Map<string, JsonSchema>();
  constructor(private readonly contracts: Readonly<Record<string, z.ZodType>>) {}

  lookup(dataschema: string): { schema: JsonSchema } | { problem: string } {
    const contract = Object.hasOwn(this.contracts, dataschema) ? this.contracts[dataschema] : undefined;
    if (!contract) {
      const m = /^(.+)\/v\d+$/.exec(dataschema);
      if (!m) return { problem: `not an event version "<type>/v<n>" (e.g. "${dataschema}/v1")` };
      const versions = Object.keys(this.contracts).filter((k) => k.startsWith(`${m[1]}/v`));
      return { problem: versions.length ? `not in the contracts (${m[1]} has ${versions.sort().join(', ')})` : `not in the contracts (no version of ${m[1]} is)` };
    }
    let schema = this.schemas.get(dataschema);
    if (!schema) this.schemas.set(dataschema, (schema = eventSnapshot(contract)));
    return { schema };
  }
}

/**
 * Entity keys (type → its key fields, null when no `@key` is flat) from the subgraphs' `@key`
 * directives, merged as the gateway reads them from the supergraph's `@join__type(key:)`: a flat
 * key declared by any subgraph wins.
 */
export function entityKeysOf(documents: readonly DocumentNode[]): Map<string, readonly string[] | null> {
  const keys = new Map<string, readonly string[] | null>();
  for (const document of documents)
    for (const definition of document.definitions) {
      if (definition.kind !== Kind.OBJECT_TYPE_DEFINITION && definition.kind !== Kind.OBJECT_TYPE_EXTENSION) continue;
      for (const directive of definition.directives ?? []) {
        if (directive.name.value !== 'key' && directive.name.value !== 'federation__key') continue;
        const fields = directive.arguments?.find((a) => a.name.value === 'fields')?.value;
        if (fields?.kind !== Kind.STRING) continue;
        const names = fields.value.trim().split(/\s+/);
        const flat = names.every((f) => /^[_A-Za-z][_0-9A-Za-z]*$/.test(f)) ? names : null;
        if (!keys.get(definition.name.value)) keys.set(definition.name.value, flat);
      }
    }
  return keys;
}
