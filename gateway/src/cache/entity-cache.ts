import type { ApolloServerPlugin } from '@apollo/server';
import type { Envelope } from '@tributary/contracts';
import type { Logger } from '@tributary/core';
import { eventTypeOf } from '@tributary/core/bindings';
import type { DocumentNode, GraphQLSchema } from 'graphql';
import type { GatewayContext } from '../context.ts';
import { readFacts, type SchemaFacts, type SupergraphInput } from './facts.ts';
import { Flights, type Flight } from './flight.ts';
import { InvalidationLog } from './log.ts';
import { cacheMetrics, type CacheMetrics } from './metrics.ts';
import { mutationChanges } from './mutations.ts';
import { planQuery, tagsOf, type CachePlan, type Plan } from './plan.ts';
import { cachePlugin } from './plugin.ts';
import type { EntityChange } from './rules.ts';
import { ResultStore } from './store.ts';
import { scoped, tagOf } from './tags.ts';

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
 *
 * The parts: the planner (plan.ts), the tagged store (store.ts), the invalidation log (log.ts),
 * single-flight (flight.ts), what a mutation changed (mutations.ts), the Apollo plugin (plugin.ts).
 */
export interface EntityCacheOptions extends SupergraphInput {
  /** The types results may hold (entities, and value types met outside any entity). */
  types: readonly string[];
  ttlMs: number;
  maxEntries: number;
  logger: Logger;
  now?: () => number;
}

export class EntityCache {
  readonly types: ReadonlySet<string>;
  /** This cache's counters (shared by every cache of the process: one registry). */
  readonly metrics: CacheMetrics;
  /** What the loaded supergraph says: entity keys, types changed as a whole, and the rules. */
  private facts: SchemaFacts;
  private readonly store: ResultStore;
  private readonly log = new InvalidationLog();
  private readonly flights = new Flights();
  private readonly plans = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, Map<string, Plan>>>();

  /** @throws ConfigError when no event announces a type's changes */
  constructor(private readonly options: EntityCacheOptions) {
    this.types = new Set(options.types);
    this.facts = this.verify(options);
    this.metrics = cacheMetrics();
    this.store = new ResultStore({ ttlMs: options.ttlMs, maxEntries: options.maxEntries, now: options.now ?? Date.now, onDrop: (cause) => this.metrics.invalidations.inc({ cause }) });
  }

  /**
   * Take a new supergraph's keys and rules (a reload). Every cached result is dropped: it was
   * planned against the old one.
   * @throws ConfigError as the constructor, and then keeps the old ones
   */
  update(next: SupergraphInput): void {
    this.facts = this.verify(next);
    this.clear();
  }

  /** What {@link update} would take: throws as it would, changes nothing. */
  verify(input: SupergraphInput): SchemaFacts {
    return readFacts(this.types, input);
  }

  /** The event types (routing keys) whose events invalidate: the gateway binds its queue to them. */
  get eventTypes(): string[] {
    return [...new Set(Object.keys(this.facts.rules).map(eventTypeOf))];
  }

  /** Whether an operation may be cached, and how its results are tagged (memoized per schema and document). */
  plan(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined): Plan {
    let bySchema = this.plans.get(schema);
    if (!bySchema) this.plans.set(schema, (bySchema = new WeakMap()));
    let byName = bySchema.get(document);
    if (!byName) bySchema.set(document, (byName = new Map()));
    const name = operationName ?? '';
    let plan = byName.get(name);
    if (!plan) byName.set(name, (plan = planQuery(schema, document, operationName, this.facts, this.types)));
    return plan;
  }

  /** The tags of a result: its static type tags, its anchors' keys, and every entity it holds. */
  tagsOf(plan: CachePlan, data: Record<string, unknown>, variables: Readonly<Record<string, unknown>> | undefined): string[] {
    return tagsOf(plan, data, variables);
  }

  get(tenant: string, key: string): Record<string, unknown> | undefined {
    return this.store.get(scoped(tenant, key));
  }

  /** The current invalidation sequence: pass it to {@link set} to refuse results a change overtook. */
  begin(): number {
    return this.log.current;
  }

  /**
   * Store a result read since `since`, unless an invalidation of one of its tags happened
   * meanwhile (the result may predate the change). Returns whether it was stored.
   */
  set(tenant: string, key: string, data: Record<string, unknown>, tags: readonly string[], since: number): boolean {
    const fullTags = tags.map((t) => scoped(tenant, t));
    if (this.log.overtook(since, fullTags)) return false;
    this.store.put(scoped(tenant, key), data, fullTags);
    return true;
  }

  /** The tenant's identical miss on its way: its answer may be shared ({@link sharable}). */
  inFlight(tenant: string, key: string): Flight | undefined {
    return this.flights.get(scoped(tenant, key));
  }

  /**
   * Whether a flight's answer, holding `tags`, may be given to a follower: no invalidation since
   * the flight began touched one of them (as {@link set} decides whether to store it). Another
   * entity's or tenant's invalidation meanwhile does not stop the sharing.
   */
  sharable(tenant: string, flight: Flight, tags: readonly string[]): boolean {
    return !this.log.overtook(flight.since, tags.map((t) => scoped(tenant, t)));
  }

  /** Register a miss on its way to the subgraphs; identical queries wait for it instead of going too. */
  takeOff(tenant: string, key: string): Flight {
    return this.flights.takeOff(scoped(tenant, key), this.log.current);
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
    this.log.record('everything');
    this.store.dropAll('event');
  }

  get size(): number {
    return this.store.size;
  }

  /** Apply an event: the changes its rule names, or the whole tenant when its data is unreadable. */
  onEvent(event: Envelope): void {
    const rule = this.facts.rules[event.dataschema];
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
    return mutationChanges(schema, document, operationName, this.facts, this.types, data);
  }

  /** The Apollo Server plugin that answers from this cache (see {@link cachePlugin}). */
  plugin(): ApolloServerPlugin<GatewayContext> {
    return cachePlugin(this);
  }

  private invalidateTags(tenant: string, tags: readonly string[], cause: 'event' | 'mutation'): void {
    const fullTags = new Set(tags.map((t) => scoped(tenant, t)));
    this.log.record(fullTags);
    this.store.dropTagged(fullTags, cause);
  }
}
