/**
 * Apollo Gateway with our own executor of its query plans. Apollo's planner stays the planner and
 * the plans are the same (the same `QueryPlanner` over the same supergraph); what changes is how a
 * plan is run and the answer shaped (./execute.ts, ./shape.ts), which the gateway's profile put at
 * a fifth of a request's CPU in Apollo's `executeQueryPlan` and `computeResponse` (see
 * docs/gateway-performance.md). Every answer is the one Apollo's executor gives, byte for byte.
 *
 * Plans this executor does not run are handed to Apollo's own executor, which then plans and runs
 * them as it always has: subscriptions, @defer, fetches with data rewrites (@interfaceObject,
 * @fromContext), operations with schema introspection, and requests whose usage traces are being
 * captured.
 */
import type { ApolloGateway, GraphQLDataSource } from '@apollo/gateway';
import { Supergraph, operationFromDocument, type Operation, type Schema } from '@apollo/federation-internals';
import { QueryPlanner, type PlanNode, type QueryPlan } from '@apollo/query-planner';
import { GraphQLError, Kind, getVariableValues, type DocumentNode, type ExecutionResult, type GraphQLSchema, type OperationDefinitionNode } from 'graphql';
import { EntityBatcher } from './batch.ts';
import { executeNode, type PlanRun, type RequestContext } from './execute.ts';
import { compileShape, shapeResponse, type Shape } from './shape.ts';

type Executor = ApolloGateway['executor'];
type LoadOptions = Parameters<ApolloGateway['load']>[0];
type SchemaListener = Parameters<ApolloGateway['onSchemaLoadOrUpdate']>[0];
type Json = Record<string, unknown>;

/** An operation this executor runs: its plan and its compiled shape. */
interface Planned {
  readonly plan: QueryPlan & { node: PlanNode };
  readonly operation: Operation;
  readonly definition: OperationDefinitionNode;
  readonly shape: Shape;
}

/** One supergraph's planner and the operations planned on it. */
interface SupergraphState {
  readonly apiSchema: Schema;
  readonly supergraph: GraphQLSchema;
  readonly planner: QueryPlanner;
  /** Least recently used first. `null`: Apollo's executor runs it. */
  readonly plans: Map<string, Planned | null>;
}

/** Operations whose plans are kept per supergraph (Apollo's plan store is bounded by size too). */
const PLANS = 1_000;

export interface PlanExecutorOptions {
  apollo: ApolloGateway;
  /** The subgraphs' data sources by service name, as the gateway's `buildService` made them. */
  services: ReadonlyMap<string, GraphQLDataSource>;
  /** Log why a supergraph could not be planned here (Apollo's executor then runs everything). */
  onError?: (error: unknown) => void;
}

/**
 * A gateway for Apollo Server (its `gateway` option): Apollo Gateway's schema loading and
 * updates, with operations run by this executor.
 */
export class PlanExecutingGateway {
  private state: SupergraphState | undefined;
  private readonly apollo: ApolloGateway;
  private readonly services: ReadonlyMap<string, GraphQLDataSource>;
  private readonly recursiveSelectionsLimitDisabled = process.env.APOLLO_DISABLE_SECURITY_RECURSIVE_SELECTIONS_CHECK === 'true';
  private readonly nonLocalSelectionsLimitDisabled = process.env.APOLLO_DISABLE_SECURITY_NON_LOCAL_SELECTIONS_CHECK === 'true';

  constructor(options: PlanExecutorOptions) {
    this.apollo = options.apollo;
    this.services = options.services;
    // Apollo calls its listeners with each supergraph it takes, before it serves it.
    this.apollo.onSchemaLoadOrUpdate(({ coreSupergraphSdl }) => {
      try {
        const supergraph = Supergraph.build(coreSupergraphSdl);
        this.state = { apiSchema: supergraph.apiSchema(), supergraph: supergraph.schema.toGraphQLJSSchema(), planner: new QueryPlanner(supergraph), plans: new Map() };
      } catch (error) {
        this.state = undefined;
        options.onError?.(error);
      }
    });
  }

  onSchemaLoadOrUpdate(callback: SchemaListener): () => void {
    return this.apollo.onSchemaLoadOrUpdate(callback);
  }

  async load(options: LoadOptions): Promise<{ executor: Executor | null }> {
    const { executor } = await this.apollo.load(options);
    return { executor: executor ? this.executorOver(executor) : null };
  }

  stop(): Promise<void> {
    return this.apollo.stop();
  }

  private executorOver(apollo: Executor): Executor {
    return async (requestContext) => {
      const state = this.state;
      const planned = state && !requestContext.metrics.captureTraces ? this.planned(state, requestContext) : null;
      if (!state || !planned) return apollo(requestContext);
      return this.execute(state, planned, requestContext);
    };
  }

  private planned(state: SupergraphState, requestContext: RequestContext): Planned | null {
    const { request, queryHash } = requestContext;
    const key = request.operationName ? `${queryHash}\n${request.operationName}` : queryHash;
    let planned = state.plans.get(key);
    if (planned !== undefined) {
      state.plans.delete(key);
    } else {
      planned = this.plan(state, requestContext.document, request.operationName);
      if (state.plans.size >= PLANS) state.plans.delete(state.plans.keys().next().value!);
    }
    state.plans.set(key, planned);
    return planned;
  }

  /** Plans an operation as Apollo's executor does; null when it is one for Apollo's executor (or fails to plan there too). */
  private plan(state: SupergraphState, document: DocumentNode, operationName: string | undefined): Planned | null {
    try {
      const operation = operationFromDocument(state.apiSchema, document, operationName !== undefined ? { operationName } : {});
      const plan = state.planner.buildQueryPlan(operation, {
        recursiveSelectionsLimitDisabled: this.recursiveSelectionsLimitDisabled,
        nonLocalSelectionsLimitDisabled: this.nonLocalSelectionsLimitDisabled,
      });
      if (!plan.node || !runsHere(plan.node)) return null;
      // Apollo shapes the answer from the operation alone with its fragments, not validated again.
      const definition = operationDefinition(document, operationName);
      if (!definition) return null;
      const fragments = document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
      const shaping = operationFromDocument(state.apiSchema, { kind: Kind.DOCUMENT, definitions: [definition, ...fragments] }, { validate: false });
      const shape = compileShape(shaping);
      if (!shape) return null;
      return { plan: plan as Planned['plan'], operation: shaping, definition, shape };
    } catch {
      // Apollo's executor meets the same failure and reports it as it always has.
      return null;
    }
  }

  private async execute(state: SupergraphState, planned: Planned, requestContext: RequestContext): Promise<ExecutionResult> {
    const { request } = requestContext;
    const definitions = planned.definition.variableDefinitions;
    if (definitions) {
      const { errors } = getVariableValues(requestContext.schema, definitions, request.variables || {});
      if (errors) return { errors };
    }
    const data: Json = Object.create(null);
    const run: PlanRun = { services: this.services, requestContext, operation: planned.operation, supergraph: state.supergraph, data, errors: [], batcher: new EntityBatcher() };
    await executeNode(run, planned.plan.node, [], data);
    const { errors } = run;
    try {
      const { data: shaped, errors: completion } = shapeResponse(planned.shape, data, request.variables);
      if (errors.length === 0 && completion.length > 0) return { extensions: { valueCompletion: completion }, data: shaped } as ExecutionResult;
      return (errors.length === 0 ? { data: shaped } : { errors, data: shaped }) as ExecutionResult;
    } catch (error) {
      if (error instanceof GraphQLError) return { errors: [error] };
      if (error instanceof Error) return { errors: [new GraphQLError(error.message, { originalError: error })] };
      requestContext.logger.error(`Unexpected error during query plan execution: ${String(error)}`);
      return { errors: [new GraphQLError('Unexpected error during query plan execution')] };
    }
  }
}

/** Apollo's buildOperationContext's choice of operation; undefined where it would throw (Apollo's executor reports it). */
function operationDefinition(document: DocumentNode, operationName: string | undefined): OperationDefinitionNode | undefined {
  let found: OperationDefinitionNode | undefined;
  let count = 0;
  for (const definition of document.definitions) {
    if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
    count++;
    if (!operationName && count > 1) return undefined;
    if (!operationName || definition.name?.value === operationName) found = definition;
  }
  return found;
}

/** Whether every node of a plan is one this executor runs as Apollo's does. */
function runsHere(node: PlanNode | NonNullable<QueryPlan['node']>): boolean {
  switch (node.kind) {
    case 'Sequence':
    case 'Parallel':
      return node.nodes.every(runsHere);
    case 'Flatten':
      return runsHere(node.node);
    case 'Condition':
      return (!node.ifClause || runsHere(node.ifClause)) && (!node.elseClause || runsHere(node.elseClause));
    case 'Fetch':
      return !node.inputRewrites?.length && !node.outputRewrites?.length && !node.contextRewrites?.length && !node.hasDefers;
    default:
      // Subscription, Defer.
      return false;
  }
}
