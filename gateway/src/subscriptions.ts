import { ApiErrorCode, type Logger } from '@tributary/core';
import { keyValue, lookupQuery, type SubscriptionBinding } from '@tributary/core/bindings';
import type { DocumentNode, ExecutionArgs, ExecutionResult, FieldNode } from 'graphql';
import { GraphQLError, Kind, getOperationAST } from 'graphql';
import { getArgumentValues } from 'graphql/execution/values.js';
import type { GatewayContext } from './context.ts';
import type { EventHub } from './event-hub.ts';
import { Stream } from './stream.ts';

/** Runs a query through the gateway (federation), as the subscribing client. */
export type QueryExecutor = (query: DocumentNode, variables: Record<string, unknown> | undefined, context: GatewayContext) => Promise<ExecutionResult>;

export interface EventSubscriptionsOptions {
  hub: EventHub;
  execute: QueryExecutor;
  logger: Logger;
  /** Most messages due to one subscription before its client is closed as too slow (SUBSCRIPTION_MAX_QUEUED). */
  maxQueued: number;
}

/**
 * The subscriptions the supergraph declares with `@eventSubscription`, over graphql-ws. Apollo
 * Gateway cannot execute subscriptions, so each message is the equivalent query through the
 * binding's lookup (`subscription { orderShipped(orderId: $id) {…} }` → `query { orderShipped:
 * order(id: $key) {…} }`, same variables and fragments), run through the gateway when a matching
 * event arrives: the client's whole selection is resolved across subgraphs, as a query would be.
 *
 * When the binding's key is bound to an argument, the entity is known at subscribe: the listener
 * is registered, then its current state is read, so a change between the two is never missed. A
 * null read is NOT_FOUND at once (the lookup answers null only for what does not exist); any
 * other entity is waited for, however long its events take. A state that already meets
 * `completeWhen` is sent and the stream completes.
 */
export class EventSubscriptions {
  private bindings = new Map<string, SubscriptionBinding>();

  constructor(private readonly options: EventSubscriptionsOptions) {}

  /** The bindings of the supergraph just loaded; streams already open keep theirs. */
  use(bindings: readonly SubscriptionBinding[]): void {
    this.bindings = new Map(bindings.map((b) => [b.field, b]));
  }

  subscribe(args: ExecutionArgs): AsyncGenerator<ExecutionResult> | ExecutionResult {
    const operation = getOperationAST(args.document, args.operationName);
    const field = operation?.selectionSet.selections[0];
    if (!operation || operation.operation !== 'subscription' || !field || field.kind !== Kind.FIELD) {
      return { errors: [new GraphQLError('expected a subscription with one root field', { extensions: { code: ApiErrorCode.BAD_USER_INPUT } })] };
    }
    const rootField = args.schema.getSubscriptionType()?.getFields()[field.name.value];
    const binding = this.bindings.get(field.name.value);
    if (!rootField || !binding) {
      return { errors: [new GraphQLError(`unknown subscription field ${field.name.value}`, { extensions: { code: ApiErrorCode.BAD_USER_INPUT } })] };
    }
    const argumentValues = getArgumentValues(rootField, field, args.variableValues ?? {});
    const fragments = args.document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
    return this.stream({
      binding,
      query: lookupQuery(binding, args.schema, { operation, field, fragments }),
      // What is read first when the message is not sent first: the hidden fields alone.
      stateQuery: lookupQuery(binding, args.schema, { operation, field: withoutSelection(field), fragments: [] }),
      variables: (args.variableValues ?? undefined) as Record<string, unknown> | undefined,
      context: args.contextValue as GatewayContext,
      responseKey: field.alias?.value ?? field.name.value,
      match: binding.match.map((m) => ({ path: m.path, value: keyValue(argumentValues[m.argument]) ?? '' })),
      key: binding.keyArgument === undefined ? undefined : keyValue(argumentValues[binding.keyArgument]),
    });
  }

  /** Starts a stream: listening at once, reading and sending on its own from then on. */
  private stream(spec: StreamSpec): AsyncGenerator<ExecutionResult> {
    const stream = new Stream(spec, this.options);
    void stream.run();
    return stream.queue;
  }
}

/** One subscription, as {@link EventSubscriptions.subscribe} read it. */
export interface StreamSpec {
  binding: SubscriptionBinding;
  query: DocumentNode;
  stateQuery: DocumentNode;
  variables: Record<string, unknown> | undefined;
  context: GatewayContext;
  responseKey: string;
  match: { path: readonly string[]; value: string }[];
  /** The entity's key, when the arguments give it. */
  key: string | undefined;
}

function withoutSelection(field: FieldNode): FieldNode {
  const { selectionSet: _, ...rest } = field;
  return rest;
}
