import type { ApolloServerPlugin } from '@apollo/server';
import type { Envelope } from '@tributary/contracts';
import type { Logger } from '@tributary/core';
import { eventTypeOf, readBindings } from '@tributary/core/bindings';
import { ConfigError } from '@tributary/core/config';
import { externalCounter } from '@tributary/core/metrics';
import {
  getNamedType,
  getOperationAST,
  isAbstractType,
  isListType,
  isNonNullType,
  isObjectType,
  Kind,
  parse as parseGraphQL,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLObjectType,
  type GraphQLSchema,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';
import type { GatewayContext } from './context.ts';

/**
 * The event-invalidated cache: whole query results, kept per tenant and tagged with the entities
 * they contain, dropped the moment an event says one of those entities changed.
 *
 * Why results and not single entities: a cached entity still costs a query plan, the root
 * fetches and Apollo's merge of every subgraph response, which is most of a gateway's time; a
 * cached result costs a map lookup. Invalidation is still per entity: each result carries a tag
 * per entity it holds (`Order:<id>`), and `any:<Type>` where it depends on a type as a whole (a
 * list, an entity whose key was not selected). An event maps to entity changes, and a change of
 * `Order` 42 drops the results tagged `Order:42` or `any:Order` — and nothing else.
 *
 * Correctness rests on two rules. (1) A type is cacheable only when every change to it is
 * announced by an event its owner publishes in the same transaction as the change (the outbox),
 * so the event arrives after the commit, never before. (2) A result read while an invalidation
 * of one of its tags happened is not stored: every miss remembers the invalidation sequence it
 * started at, and the store re-checks the invalidations since then.
 */

/** One entity (or, without `id`, a whole type) that an event says has changed. */
export interface EntityChange {
  type: string;
  /** The key's value; the values in key-field order for a compound key. */
  id?: string | readonly string[];
}

/** How one event version invalidates: the types it reports changes of, and what its data says changed. */
export interface InvalidationRule {
  /** Only these may be cached. */
  types: readonly string[];
  /** The changes; undefined when the data does not say (the tenant's results are dropped). */
  changes(data: unknown): EntityChange[] | undefined;
}

/** Keyed by the event's `dataschema` (`<type>/v<n>`). */
export type InvalidationRules = Readonly<Record<string, InvalidationRule>>;

export interface EntityCacheOptions {
  /** The types results may hold (entities, and value types met outside any entity). */
  types: readonly string[];
  rules: InvalidationRules;
  /** Types events change as a whole (`@changedBy` without a key), e.g. a tenant's aggregates. */
  wholeTypes?: readonly string[];
  /** The composed supergraph: where the entity keys come from. */
  supergraphSdl: string;
  ttlMs: number;
  maxEntries: number;
  logger: Logger;
  now?: () => number;
}

interface SchemaFacts {
  keys: ReadonlyMap<string, readonly string[] | null>;
  wholeTypes: ReadonlySet<string>;
  rules: InvalidationRules;
  /** `Type.field` of the `@volatile` fields: no event says when they change. */
  volatile: ReadonlySet<string>;
}

/** A cache plan for one operation: whether it may be cached, and the tags it always carries. */
type Plan =
  | { cacheable: false; reason: string }
  | { cacheable: true; staticTags: readonly string[]; anchors: readonly Anchor[] };

/** A root field that looks one entity up by its key (`order(id:)`): its result belongs to that entity. */
interface Anchor {
  responseKey: string;
  type: string;
  /** The key value from the arguments (literals or variables). */
  id(variables: Readonly<Record<string, unknown>> | undefined): string | undefined;
  shape: Shape;
}

/** Where the entities are in a result: the selection, flattened, with key fields located. */
interface Shape {
  type: string;
  entity: boolean;
  /** Response keys of the key fields, when the selection has them all. */
  keyResponseKeys: readonly string[] | null;
  children: ReadonlyArray<readonly [string, Shape]>;
}

interface Entry {
  tenant: string;
  data: Record<string, unknown>;
  tags: readonly string[];
  expiresAt: number;
}

/** A miss being answered: followers of the same query share its result. */
interface Flight {
  /** The invalidation sequence it began at: a follower joins only if nothing was invalidated since. */
  since: number;
  result: Promise<Record<string, unknown> | undefined>;
  land(data: Record<string, unknown> | undefined): void;
}

const SEP = '\u0000';
/** Longest a follower waits for the miss it joined before it asks the subgraphs itself. */
const FLIGHT_TIMEOUT_MS = 10_000;
const KEY_SEP = '\u001f';
/** How many recent invalidations a miss can be checked against before it gives up storing. */
const RECENT_INVALIDATIONS = 4_096;

const metrics = {
  requests: externalCounter('tributary_gateway_cache_requests_total', 'Queries by cache outcome: hit, shared (joined an identical miss in flight), miss, bypass (not cacheable)', ['result']),
  invalidations: externalCounter('tributary_gateway_cache_invalidations_total', 'Cache entries dropped, by cause: event, mutation, expired, evicted', ['cause']),
};

/**
 * The tags a change drops: `T:<id>` and `any:T` for one entity; for a whole type (no id), `all:T`,
 * which every result holding a T carries.
 */
export const tagOf = (change: EntityChange): string[] => {
  if (change.id === undefined) return [`all:${change.type}`];
  const id = typeof change.id === 'string' ? change.id : change.id.join(KEY_SEP);
  return [`any:${change.type}`, `${change.type}:${id}`];
};

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

function literal(node: ValueNode, variables: Readonly<Record<string, unknown>> | undefined): string | undefined {
  if (node.kind === Kind.VARIABLE) {
    const value = variables?.[node.name.value];
    return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
  }
  if (node.kind === Kind.STRING || node.kind === Kind.INT) return node.value;
  return undefined;
}

class Planner {
  constructor(
    private readonly schema: GraphQLSchema,
    private readonly keys: ReadonlyMap<string, readonly string[] | null>,
    private readonly types: ReadonlySet<string>,
    /** Types whose changes events report for the type as a whole (no key): they decide a result like entities do. */
    private readonly wholeTypes: ReadonlySet<string>,
    private readonly fragments: ReadonlyMap<string, FragmentDefinitionNode>,
    /** Mutations are walked only to find what they changed: every type is allowed. */
    private readonly checkTypes: boolean,
    /** `@volatile` fields (`Type.field`): a result holding one is never cached. */
    private readonly volatile: ReadonlySet<string> = new Set(),
  ) {}

  /** Fields of selection sets on a concrete type, grouped by response key (fragments inlined). */
  collect(sets: readonly (SelectionSetNode | undefined)[], type: GraphQLObjectType, into = new Map<string, FieldNode[]>()): Map<string, FieldNode[]> {
    for (const set of sets) {
      for (const selection of set?.selections ?? []) {
        if (selection.kind === Kind.FIELD) {
          const key = selection.alias?.value ?? selection.name.value;
          const list = into.get(key);
          if (list) list.push(selection);
          else into.set(key, [selection]);
        } else {
          const fragment = selection.kind === Kind.INLINE_FRAGMENT ? selection : this.fragments.get(selection.name.value);
          if (!fragment) continue;
          const condition = fragment.typeCondition?.name.value;
          if (condition === undefined || condition === type.name) this.collect([fragment.selectionSet], type, into);
          else {
            const conditionType = this.schema.getType(condition);
            if (conditionType && isAbstractType(conditionType) && this.schema.isSubType(conditionType, type)) this.collect([fragment.selectionSet], type, into);
          }
        }
      }
    }
    return into;
  }

  /**
   * The shape of the selection `nodes` on `type`. Adds `all:<T>` for every type met into `tags`,
   * and `any:<T>` too when `whole` (a list's members are unknown until it is read again).
   * Throws a reason string when the selection is not cacheable.
   */
  shape(nodes: readonly FieldNode[], type: GraphQLObjectType, tags: Set<string>, whole: boolean): Shape {
    const entity = this.keys.has(type.name);
    if (this.checkTypes && entity && !this.types.has(type.name)) throw `${type.name} is not a cached type`;
    tags.add(`all:${type.name}`);
    if (whole) tags.add(`any:${type.name}`);
    const fields = this.collect(
      nodes.map((n) => n.selectionSet),
      type,
    );
    const children: (readonly [string, Shape])[] = [];
    for (const [responseKey, fieldNodes] of fields) {
      const name = fieldNodes[0]!.name.value;
      if (name === '__typename') continue;
      const definition = type.getFields()[name];
      if (!definition) throw `${type.name}.${name} is unknown`;
      if (this.checkTypes && this.volatile.has(`${type.name}.${name}`)) throw `${type.name}.${name} is @volatile: no event says when it changes`;
      const named = getNamedType(definition.type);
      if (isAbstractType(named)) throw `${type.name}.${name} is abstract`;
      if (isObjectType(named)) children.push([responseKey, this.shape(fieldNodes, named, tags, whole)]);
    }
    let keyResponseKeys: string[] | null = null;
    const keyFields = this.keys.get(type.name);
    if (keyFields) {
      keyResponseKeys = [];
      for (const keyField of keyFields) {
        const found = [...fields].find(([, nodes]) => nodes.some((n) => n.name.value === keyField && !n.arguments?.length));
        if (!found) {
          keyResponseKeys = null;
          break;
        }
        keyResponseKeys.push(found[0]);
      }
    }
    return { type: type.name, entity, keyResponseKeys, children };
  }

  /**
   * The entity types that decide what a value of `type` holds: itself if an entity, else those
   * reachable through value types (`OrderConnection` → `OrderEdge` → `Order`).
   */
  members(type: GraphQLObjectType, seen = new Set<string>()): Set<string> {
    const found = new Set<string>();
    if (seen.has(type.name)) return found;
    seen.add(type.name);
    if (this.keys.has(type.name) || this.wholeTypes.has(type.name)) return found.add(type.name);
    for (const field of Object.values(type.getFields())) {
      const named = getNamedType(field.type);
      const objects = isObjectType(named) ? [named] : isAbstractType(named) ? this.schema.getPossibleTypes(named) : [];
      for (const object of objects) for (const member of this.members(object, seen)) found.add(member);
    }
    return found;
  }

  /** A root field whose arguments are exactly its entity's key: `order(id: ID!): Order`. */
  anchor(responseKey: string, field: GraphQLField<unknown, unknown>, node: FieldNode, type: GraphQLObjectType, tags: Set<string>): Anchor | undefined {
    const keyFields = this.keys.get(type.name);
    const unwrapped = isNonNullType(field.type) ? field.type.ofType : field.type;
    if (!keyFields || isListType(unwrapped)) return undefined;
    const argNames = field.args.map((a) => a.name);
    if (argNames.length !== keyFields.length || !keyFields.every((k) => argNames.includes(k))) return undefined;
    const values = keyFields.map((k) => node.arguments?.find((a) => a.name.value === k)?.value);
    if (values.some((v) => v === undefined)) return undefined;
    return {
      responseKey,
      type: type.name,
      id: (variables) => {
        const parts = values.map((v) => literal(v!, variables));
        return parts.every((p) => p !== undefined) ? parts.join(KEY_SEP) : undefined;
      },
      shape: this.shape([node], type, tags, false),
    };
  }
}

/** Identified entities in a value of `shape`: `T:<id>` tags, or `any:T` when the key is missing. */
function collectTags(value: unknown, shape: Shape, tags: string[], root: boolean): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) collectTags(item, shape, tags, false);
    return;
  }
  const object = value as Record<string, unknown>;
  if (shape.entity && !root) {
    const parts = shape.keyResponseKeys?.map((k) => object[k]);
    if (parts && parts.every((p) => typeof p === 'string' || typeof p === 'number')) tags.push(`${shape.type}:${parts.join(KEY_SEP)}`);
    else tags.push(`any:${shape.type}`);
  }
  for (const [key, child] of shape.children) collectTags(object[key], child, tags, false);
}

export class EntityCache {
  readonly types: ReadonlySet<string>;
  /** What the loaded supergraph says: entity keys, types changed as a whole, and the rules. */
  private schema: SchemaFacts;
  /** Insertion order is recency: a hit moves its entry to the end. */
  private readonly entries = new Map<string, Entry>();
  private readonly byTag = new Map<string, Set<string>>();
  private readonly plans = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, Map<string, Plan>>>();
  private sequence = 0;
  private readonly flights = new Map<string, Flight>();
  /** Recent invalidations, for {@link set}'s check; `everything` after {@link clear}. */
  private readonly recent: { sequence: number; tags: ReadonlySet<string> | 'everything' }[] = [];
  private readonly now: () => number;

  /** @throws ConfigError when no event announces a type's changes */
  constructor(private readonly options: EntityCacheOptions) {
    this.types = new Set(options.types);
    this.now = options.now ?? Date.now;
    this.schema = this.verify(options);
  }

  /**
   * Take a new supergraph's keys and rules (a reload). Every cached result is dropped: it was
   * planned against the old one.
   * @throws ConfigError as the constructor, and then keeps the old ones
   */
  update(next: Pick<EntityCacheOptions, 'rules' | 'wholeTypes' | 'supergraphSdl'>): void {
    this.schema = this.verify(next);
    this.clear();
  }

  /** What {@link update} would take: throws as it would, changes nothing. */
  verify(options: Pick<EntityCacheOptions, 'rules' | 'wholeTypes' | 'supergraphSdl'>): SchemaFacts {
    const keys = entityKeys(options.supergraphSdl);
    const wholeTypes = new Set(options.wholeTypes ?? []);
    const announced = new Set(Object.values(options.rules).flatMap((rule) => rule.types));
    const problems = [...this.types].flatMap((name) =>
      !announced.has(name)
        ? [`no event announces changes of ${name} (declare them with @changedBy in its subgraph), so it cannot be cached`]
        : !keys.has(name) && !wholeTypes.has(name)
          ? [`${name} is neither an entity (a type with @key) nor changed as a whole by any event`]
          : [],
    );
    if (problems.length > 0) throw new ConfigError(problems.map((message) => ({ key: 'GATEWAY_CACHE_TYPES', message })));
    return { keys, wholeTypes, rules: options.rules, volatile: new Set(readBindings(options.supergraphSdl).bindings.volatile) };
  }

  /** The event types (routing keys) whose events invalidate: the gateway binds its queue to them. */
  get eventTypes(): string[] {
    return [...new Set(Object.keys(this.schema.rules).map(eventTypeOf))];
  }

  plan(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined): Plan {
    let bySchema = this.plans.get(schema);
    if (!bySchema) this.plans.set(schema, (bySchema = new WeakMap()));
    let byName = bySchema.get(document);
    if (!byName) bySchema.set(document, (byName = new Map()));
    const name = operationName ?? '';
    let plan = byName.get(name);
    if (!plan) byName.set(name, (plan = this.makePlan(schema, document, operationName)));
    return plan;
  }

  /** The operation, its root type and a planner over the document's fragments. */
  private open(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, checkTypes: boolean) {
    const operation = getOperationAST(document, operationName);
    const root = operation && schema.getRootType(operation.operation);
    if (!operation || !root) return undefined;
    const fragments = new Map(document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
    return { operation, root, planner: new Planner(schema, this.schema.keys, this.types, this.schema.wholeTypes, fragments, checkTypes, this.schema.volatile) };
  }

  private makePlan(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined): Plan {
    const opened = this.open(schema, document, operationName, true);
    if (!opened) return { cacheable: false, reason: 'no operation' };
    const { operation, root, planner } = opened;
    if (operation.operation !== 'query') return { cacheable: false, reason: operation.operation };
    const staticTags = new Set<string>();
    const anchors: Anchor[] = [];
    try {
      for (const [responseKey, nodes] of planner.collect([operation.selectionSet], root)) {
        const name = nodes[0]!.name.value;
        if (name === '__typename') continue;
        const field = root.getFields()[name];
        if (!field || name.startsWith('__')) throw `${name} is not cacheable`;
        if (this.schema.volatile.has(`${root.name}.${name}`)) throw `${root.name}.${name} is @volatile: no event says when it changes`;
        const type = getNamedType(field.type);
        if (!isObjectType(type)) throw `${root.name}.${name} returns no object type`;
        const anchor = nodes.length === 1 ? planner.anchor(responseKey, field, nodes[0]!, type, staticTags) : undefined;
        if (anchor) anchors.push(anchor);
        else {
          // A list's members can change without any member changing: any change of a type that
          // decides its membership drops it.
          const members = planner.members(type);
          if (members.size === 0) throw `${root.name}.${name}: no entity type decides its result`;
          for (const member of members) {
            if (!this.types.has(member)) throw `${member} is not a cached type`;
            staticTags.add(`any:${member}`);
          }
          planner.shape(nodes, type, staticTags, true);
        }
      }
    } catch (reason) {
      if (typeof reason !== 'string') throw reason;
      return { cacheable: false, reason };
    }
    return { cacheable: true, staticTags: [...staticTags], anchors };
  }

  /** The tags of a result: its static type tags, its anchors' keys, and every entity it holds. */
  tagsOf(plan: Extract<Plan, { cacheable: true }>, data: Record<string, unknown>, variables: Readonly<Record<string, unknown>> | undefined): string[] {
    const tags = ['*', ...plan.staticTags];
    for (const anchor of plan.anchors) {
      const id = anchor.id(variables);
      tags.push(id === undefined ? `any:${anchor.type}` : `${anchor.type}:${id}`);
      collectTags(data[anchor.responseKey], anchor.shape, tags, true);
    }
    return tags;
  }

  get(tenant: string, key: string): Record<string, unknown> | undefined {
    const full = tenant + SEP + key;
    const entry = this.entries.get(full);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.delete(full, 'expired');
      return undefined;
    }
    this.entries.delete(full);
    this.entries.set(full, entry);
    return entry.data;
  }

  /** The current invalidation sequence: pass it to {@link set} to refuse results a change overtook. */
  begin(): number {
    return this.sequence;
  }

  /**
   * Store a result read since `since`, unless an invalidation of one of its tags happened
   * meanwhile (the result may predate the change). Returns whether it was stored.
   */
  set(tenant: string, key: string, data: Record<string, unknown>, tags: readonly string[], since: number): boolean {
    const fullTags = tags.map((t) => tenant + SEP + t);
    if (this.sequence !== since) {
      const oldest = this.recent[0];
      if (!oldest || oldest.sequence > since + 1) return false;
      for (let i = this.recent.length - 1; i >= 0 && this.recent[i]!.sequence > since; i--) {
        const seen = this.recent[i]!.tags;
        if (seen === 'everything' || fullTags.some((t) => seen.has(t))) return false;
      }
    }
    const full = tenant + SEP + key;
    if (this.entries.has(full)) this.delete(full, null);
    this.entries.set(full, { tenant, data, tags: fullTags, expiresAt: this.now() + this.options.ttlMs });
    for (const tag of fullTags) {
      let keys = this.byTag.get(tag);
      if (!keys) this.byTag.set(tag, (keys = new Set()));
      keys.add(full);
    }
    while (this.entries.size > this.options.maxEntries) this.delete(this.entries.keys().next().value!, 'evicted');
    return true;
  }

  /** Drop every result of the tenant that holds one of these entities (or types). */
  invalidate(tenant: string, changes: readonly EntityChange[], cause: 'event' | 'mutation'): void {
    this.invalidateTags(tenant, changes.flatMap(tagOf), cause);
  }

  /** Everything of one tenant: for an event the cache cannot read. */
  invalidateTenant(tenant: string): void {
    this.invalidateTags(tenant, ['*'], 'event');
  }

  /**
   * Everything, of every tenant, and no miss begun before now is stored: the gateway may have
   * missed events (its queue was re-created).
   */
  clear(): void {
    this.remember('everything');
    for (const key of [...this.entries.keys()]) this.delete(key, 'event');
  }

  private remember(tags: ReadonlySet<string> | 'everything'): void {
    this.recent.push({ sequence: ++this.sequence, tags });
    if (this.recent.length > RECENT_INVALIDATIONS) this.recent.shift();
  }

  private invalidateTags(tenant: string, tags: readonly string[], cause: 'event' | 'mutation'): void {
    const fullTags = new Set(tags.map((t) => tenant + SEP + t));
    this.remember(fullTags);
    for (const tag of fullTags) {
      const keys = this.byTag.get(tag);
      if (!keys) continue;
      for (const key of keys) this.delete(key, cause);
    }
  }

  private delete(key: string, cause: 'event' | 'mutation' | 'expired' | 'evicted' | null): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    for (const tag of entry.tags) {
      const keys = this.byTag.get(tag);
      keys?.delete(key);
      if (keys?.size === 0) this.byTag.delete(tag);
    }
    if (cause) metrics.invalidations.inc({ cause });
  }

  get size(): number {
    return this.entries.size;
  }

  /** Apply an event: the changes its rule names, or the whole tenant when its data is unreadable. */
  onEvent(event: Envelope): void {
    const rule = this.schema.rules[event.dataschema];
    if (!rule) return;
    const changes = rule.changes(event.data);
    if (!changes) {
      this.options.logger.warn({ dataschema: event.dataschema, id: event.id }, 'cache: the event does not say what changed; dropping every cached result of its tenant');
      this.invalidateTenant(event.tenantid);
      return;
    }
    this.invalidate(event.tenantid, changes, 'event');
  }

  /** What a mutation's result says it changed: its identified entities, or their types. */
  changedBy(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, data: Record<string, unknown>): EntityChange[] {
    const opened = this.open(schema, document, operationName, false);
    if (!opened) return [];
    const { operation, root, planner } = opened;
    const tags: string[] = [];
    for (const [responseKey, nodes] of planner.collect([operation.selectionSet], root)) {
      const field = root.getFields()[nodes[0]!.name.value];
      const type = field && getNamedType(field.type);
      if (!type || !isObjectType(type)) continue;
      collectTags(data[responseKey], planner.shape(nodes, type, new Set(), false), tags, false);
    }
    return [...new Set(tags)].map((tag) => {
      if (tag.startsWith('any:')) return { type: tag.slice(4) };
      const at = tag.indexOf(':');
      return { type: tag.slice(0, at), id: tag.slice(at + 1).split(KEY_SEP) };
    });
  }

  /**
   * The Apollo Server plugin: answers cacheable queries from the cache, stores what it missed,
   * and applies what a mutation through this gateway changed at once (a client reads its own
   * writes without waiting for the event).
   */
  plugin(): ApolloServerPlugin<GatewayContext> {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the plugin's hooks are not methods of the cache
    const cache = this;
    return {
      async requestDidStart() {
        let miss: { key: string; plan: Extract<Plan, { cacheable: true }>; since: number; flight: Flight } | undefined;
        return {
          async responseForOperation(rc) {
            if (rc.operation.operation !== 'query') return null;
            const plan = cache.plan(rc.schema, rc.document, rc.operationName);
            if (!plan.cacheable) {
              metrics.requests.inc({ result: 'bypass' });
              return null;
            }
            const tenant = rc.contextValue.tenantId;
            const key = `${rc.queryHash}${SEP}${rc.operationName ?? ''}${SEP}${rc.request.variables ? JSON.stringify(rc.request.variables) : ''}`;
            const hit = (data: Record<string, unknown>, result: 'hit' | 'shared') => {
              metrics.requests.inc({ result });
              rc.response.http.headers.set('x-tributary-cache', result);
              return { http: rc.response.http, body: { kind: 'single' as const, singleResult: { data } } };
            };
            const data = cache.get(tenant, key);
            if (data) return hit(data, 'hit');
            // The same query already on its way, begun after the latest invalidation: share its answer.
            const flight = cache.flights.get(tenant + SEP + key);
            if (flight && flight.since === cache.sequence) {
              const shared = await flight.result;
              if (shared) return hit(shared, 'shared');
            }
            metrics.requests.inc({ result: 'miss' });
            rc.response.http.headers.set('x-tributary-cache', 'miss');
            miss = { key, plan, since: cache.sequence, flight: cache.takeOff(tenant + SEP + key) };
            return null;
          },
          async willSendResponse(rc) {
            if (rc.response.body.kind !== 'single' || !rc.operation) return miss?.flight.land(undefined);
            const { data, errors } = rc.response.body.singleResult;
            const ok = data && !errors?.length ? data : undefined;
            const tenant = rc.contextValue.tenantId;
            if (miss) {
              miss.flight.land(ok);
              if (ok) cache.set(tenant, miss.key, ok, cache.tagsOf(miss.plan, ok, rc.request.variables), miss.since);
            } else if (ok && rc.operation.operation === 'mutation' && rc.document) {
              cache.invalidate(tenant, cache.changedBy(rc.schema, rc.document, rc.operationName, ok), 'mutation');
            }
          },
        };
      },
    };
  }

  /** Register a miss on its way to the subgraphs; identical queries wait for it instead of going too. */
  private takeOff(key: string): Flight {
    let settle!: (data: Record<string, unknown> | undefined) => void;
    const result = new Promise<Record<string, unknown> | undefined>((resolve) => (settle = resolve));
    // A leader that never answers (a hook that threw) must not hold its followers forever.
    const timer = setTimeout(() => flight.land(undefined), FLIGHT_TIMEOUT_MS);
    timer.unref();
    const flight: Flight = {
      since: this.sequence,
      result,
      land: (data) => {
        clearTimeout(timer);
        settle(data);
        if (this.flights.get(key) === flight) this.flights.delete(key);
      },
    };
    this.flights.set(key, flight);
    return flight;
  }
}
