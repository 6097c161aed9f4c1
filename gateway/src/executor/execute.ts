/**
 * Runs a query plan of Apollo's planner against the subgraphs and merges their answers into one
 * tree: Apollo Gateway's `executeNode`/`executeFetch` (executeQueryPlan.js, 2.14) step for step,
 * without what this gateway does not use on that path (usage-reporting trace nodes, an
 * OpenTelemetry span per node and fetch) and with the representations' selections compiled once
 * per fetch node instead of interpreted per entity. The merged tree is the same as Apollo's, and
 * so are the errors and their order: the answer is then shaped by ./shape.ts.
 */
import type { ApolloGateway, GraphQLDataSource, GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { assert, type Operation } from '@apollo/federation-internals';
import { evaluateCondition, type FetchNode, type PlanNode, type QueryPlanSelectionNode, type ResponsePath } from '@apollo/query-planner';
import type { EntityBatcher } from './batch.ts';
import { downstreamServiceError, lazyErrorPath } from './errors.ts';
import { isAbstractType, isInterfaceType, isObjectType, type GraphQLError, type GraphQLSchema } from 'graphql';

type Json = Record<string, unknown>;
/** The request context Apollo Server hands a gateway's executor. */
export type RequestContext = Parameters<ApolloGateway['executor']>[0];

/**
 * `GraphQLDataSourceRequestKind.INCOMING_OPERATION`: @apollo/gateway declares the enum but does not
 * export it. A data source tells a client's operation from its own health checks by it (Apollo's
 * `RemoteGraphQLDataSource` passes the client's request context to `willSendRequest` only then);
 * executor.test.ts checks that Apollo's own executor sends this value.
 */
export const INCOMING_OPERATION = 'incoming operation' as Extract<GraphQLDataSourceProcessOptions, { incomingRequestContext: unknown }>['kind'];

export interface PlanRun {
  readonly services: ReadonlyMap<string, GraphQLDataSource>;
  readonly requestContext: RequestContext;
  /** The operation, on the API schema (for @skip/@include conditions' defaults). */
  readonly operation: Operation;
  /** The supergraph as a graphql-js schema (what Apollo tests representations' fragments against). */
  readonly supergraph: GraphQLSchema;
  /** The whole merged result so far (error paths are found in it). */
  readonly data: Json;
  /** The subgraphs' errors and failed fetches, in the order Apollo records them. */
  readonly errors: GraphQLError[];
  /** Sends this request's entity fetches that are the same operation and start together as one. */
  readonly batcher: EntityBatcher;
}

/** Apollo's `executeNode` (without trace nodes). */
export async function executeNode(run: PlanRun, node: PlanNode, path: ResponsePath, data: unknown): Promise<void> {
  switch (node.kind) {
    case 'Sequence':
      for (const child of node.nodes) await executeNode(run, child, path, data);
      return;
    case 'Parallel':
      await Promise.all(node.nodes.map((child) => executeNode(run, child, path, data)));
      return;
    case 'Flatten': {
      const inner = flattenAt(data, node.path, 0);
      // Apollo's moveIntoCursor: nothing at the path (null, undefined) runs nothing below it.
      if (!inner) return;
      await executeNode(run, node.node, path.concat(node.path), inner);
      return;
    }
    case 'Fetch':
      try {
        await executeFetch(run, node, path, data);
      } catch (error) {
        run.errors.push(error as GraphQLError);
      }
      return;
    case 'Condition': {
      const value = evaluateCondition(node, run.operation.variableDefinitions, run.requestContext.request.variables);
      const branch = value ? node.ifClause : node.elseClause;
      if (branch) await executeNode(run, branch, path, data);
      return;
    }
    case 'Defer':
      assert(false, '@defer support is not available in the gateway');
  }
}

/**
 * Apollo's `flattenResultsAtPath`: the values at `path` under `value`, every `@` a list whose
 * elements are each followed (and whose nested lists are flattened one level, as `flatMap` does).
 * Collected into one array instead of one per list met, which on a deep path is most of its cost.
 */
function flattenAt(value: unknown, path: ResponsePath, from: number): unknown {
  if (from === path.length || value === undefined || value === null) return value;
  if (path[from] !== '@') return flattenAt(step(value, path[from]), path, from + 1);
  const out: unknown[] = [];
  collect(value, path, from, out);
  return out;
}

/** Pushes what `flatMap` over the list `value` at `path[from]` (an `@`) would return. */
function collect(value: unknown, path: ResponsePath, from: number, out: unknown[]): void {
  // Where Apollo's `value.flatMap` fails on a value that is no list.
  if (!Array.isArray(value)) throw new TypeError('value.flatMap is not a function');
  for (let i = 0; i < value.length; i++) {
    let element: unknown = value[i];
    let at = from + 1;
    // Follow field names down to the next `@` or the end, as the recursion would.
    while (at < path.length && element !== undefined && element !== null && path[at] !== '@') element = step(element, path[at++]);
    if (at === path.length || element === undefined || element === null) {
      if (Array.isArray(element)) out.push(...element);
      else out.push(element);
    } else {
      collect(element, path, at, out);
    }
  }
}

function step(value: unknown, key: string | number | undefined): unknown {
  assert(typeof key === 'string', () => `Unexpected ${typeof key} found in path`);
  assert(!Array.isArray(value), () => `Unexpected array in result for path element ${key}`);
  return Object.hasOwn(value as object, key) ? (value as Json)[key] : undefined;
}

async function executeFetch(run: PlanRun, fetch: FetchNode, path: ResponsePath, data: unknown): Promise<void> {
  const service = run.services.get(fetch.serviceName);
  if (!service) throw new Error(`Couldn't find service with name "${fetch.serviceName}"`);
  const entities: Json[] = Array.isArray(data) ? data.filter((entity) => entity !== null && entity !== undefined) : [data as Json];
  if (entities.length < 1) return;
  const variables: Json = Object.create(null);
  const provided = run.requestContext.request.variables;
  if (fetch.variableUsages && provided) {
    for (const name of fetch.variableUsages) {
      if (Object.hasOwn(provided, name) && provided[name] !== undefined) variables[name] = provided[name];
    }
  }
  if (!fetch.requires) {
    const received = await send(run, service, fetch, path, variables);
    for (const entity of entities) deepMerge(entity, received);
    return;
  }
  const represent = representationsOf(fetch);
  const representations: Json[] = [];
  const entityOf: number[] = [];
  for (let i = 0; i < entities.length; i++) {
    const representation = represent(run.supergraph, entities[i]);
    if (representation && representation.__typename) {
      representations.push(representation);
      entityOf.push(i);
    }
  }
  if (representations.length < 1) return;
  if ('representations' in variables) throw new Error(`Variables cannot contain key "representations"`);
  const received = await send(run, service, fetch, path, { ...variables, representations }, variables);
  if (!received) return;
  const receivedEntities = received._entities;
  if (!(receivedEntities && Array.isArray(receivedEntities))) throw new Error(`Expected "data._entities" in response to be an array`);
  if (receivedEntities.length !== representations.length) throw new Error(`Expected "data._entities" to contain ${representations.length} elements`);
  for (let i = 0; i < receivedEntities.length; i++) {
    const receivedEntity = receivedEntities[i] as Json | null;
    const existing = entities[entityOf[i]!]!;
    if (receivedEntity && !receivedEntity.__typename) receivedEntity.__typename = existing.__typename;
    deepMerge(existing, receivedEntity);
  }
}

/** One fetch's request and what Apollo does with its answer; an entity fetch (`otherVariables` given) goes through the batcher. */
async function send(run: PlanRun, service: GraphQLDataSource, fetch: FetchNode, path: ResponsePath, variables: Json, otherVariables?: Json): Promise<Json | null | undefined> {
  const { requestContext } = run;
  const options: Parameters<GraphQLDataSource['process']>[0] = {
    kind: INCOMING_OPERATION,
    request: { query: fetch.operation, variables, ...(fetch.operationName !== undefined ? { operationName: fetch.operationName } : {}) },
    incomingRequestContext: requestContext,
    context: requestContext.context,
    ...(fetch.operationDocumentNode ? { document: fetch.operationDocumentNode } : {}),
    pathInIncomingRequest: path as never,
  };
  const response = otherVariables
    ? await run.batcher.process(service, batchKeyOf(fetch), options, variables.representations as unknown[], otherVariables)
    : await service.process(options);
  if (response.errors) {
    const errorPath = lazyErrorPath(fetch, path, run.data);
    for (const error of response.errors) run.errors.push(downstreamServiceError(error, fetch.serviceName, errorPath));
    if (!response.extensions?.ftv1) {
      const errorPaths = response.errors.map((error) => ({ subgraph: fetch.serviceName, path: error.path }));
      const metrics = requestContext.metrics as { nonFtv1ErrorPaths?: typeof errorPaths };
      if (metrics.nonFtv1ErrorPaths) metrics.nonFtv1ErrorPaths.push(...errorPaths);
      else metrics.nonFtv1ErrorPaths = errorPaths;
    }
  }
  return response.data as Json | null | undefined;
}

const batchKeys = new WeakMap<FetchNode, string>();

/** The service and the fetch's operation without its name: Apollo's planner names every fetch of a plan apart (`Op__products__2`, `Op__products__6`). */
function batchKeyOf(fetch: FetchNode): string {
  let key = batchKeys.get(fetch);
  if (key === undefined) {
    const name = fetch.operationName;
    const at = name ? fetch.operation.indexOf(name) : -1;
    key = `${fetch.serviceName}\n${at < 0 ? fetch.operation : fetch.operation.slice(0, at) + fetch.operation.slice(at + name!.length)}`;
    batchKeys.set(fetch, key);
  }
  return key;
}

type Represent = (schema: GraphQLSchema, entity: unknown) => Json | null;
const compiled = new WeakMap<FetchNode, Represent>();

/** A fetch's `requires` as a function from an entity to its representation (Apollo's `executeSelectionSet`). */
function representationsOf(fetch: FetchNode): Represent {
  let represent = compiled.get(fetch);
  if (!represent) {
    represent = compileRequires(fetch.requires!);
    compiled.set(fetch, represent);
  }
  return represent;
}

function compileRequires(selections: readonly QueryPlanSelectionNode[]): Represent {
  const steps = selections.map((selection) =>
    selection.kind === 'Field'
      ? { field: true as const, responseName: selection.alias ?? selection.name, sub: selection.selections ? compileRequires(selection.selections) : undefined }
      : { field: false as const, typeCondition: selection.typeCondition, sub: compileRequires(selection.selections) },
  );
  const represent: Represent = (schema, source) => {
    if (source === null) return null;
    const result: Json = Object.create(null);
    for (const step of steps) {
      if (step.field) {
        const value = Object.hasOwn(source as object, step.responseName) ? (source as Json)[step.responseName] : undefined;
        if (value === undefined) return null;
        const sub = step.sub;
        if (Array.isArray(value)) result[step.responseName] = sub ? value.map((element) => sub(schema, element)) : value;
        else result[step.responseName] = sub ? sub(schema, value) : value;
      } else {
        if (!step.typeCondition || !source) continue;
        if (isObjectOfType(schema, source as Json, step.typeCondition)) deepMerge(result, step.sub(schema, source));
      }
    }
    return result;
  };
  return represent;
}

/** Apollo's `isObjectOfType` (dataRewrites.js). */
function isObjectOfType(schema: GraphQLSchema, object: Json, typeCondition: string): boolean {
  const typename = object.__typename as string | undefined;
  if (!typename) return false;
  if (typeCondition === typename) return true;
  const type = schema.getType(typename);
  if (!type) return false;
  const conditionType = schema.getType(typeCondition);
  if (!conditionType) return false;
  if (isAbstractType(conditionType)) return (isObjectType(type) || isInterfaceType(type)) && schema.isSubType(conditionType, type);
  return false;
}

const isObject = (value: unknown): value is Json => value !== undefined && value !== null && typeof value === 'object' && !Array.isArray(value);

/** Apollo's `deepMerge` (utilities/deepMerge.js). */
function deepMerge(target: Json, source: Json | null | undefined): Json {
  if (source === undefined || source === null) return target;
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (value === undefined) continue;
    defineOwn(target, key);
    const existing = target[key];
    if (existing && isObject(value)) {
      deepMerge(existing as Json, value);
    } else if (Array.isArray(value) && Array.isArray(existing) && value.length === existing.length) {
      for (let i = 0; i < value.length; i++) {
        if (isObject(existing[i]) && isObject(value[i])) deepMerge(existing[i] as Json, value[i] as Json);
        else existing[i] = value[i];
      }
    } else {
      target[key] = value;
    }
  }
  return target;
}

/** Apollo's `defineOwn`: a key the object inherits (`constructor`, `toString`) becomes its own before it is written. */
function defineOwn(object: Json, key: string): void {
  if (!Object.hasOwn(object, key) && key in object) Object.defineProperty(object, key, { configurable: true, enumerable: true, value: undefined, writable: true });
}
