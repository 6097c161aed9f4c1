import type { Envelope } from '@tributary/contracts';
import { ApiErrorCode, type Logger } from '@tributary/core';
import { conditionHolds, KEY_VARIABLE, keyValue, lookupQuery, takeHidden, valueAt, type SubscriptionBinding } from '@tributary/core/bindings';
import { SpanKind, withSpan } from '@tributary/core/tracing';
import type { DocumentNode, ExecutionArgs, ExecutionResult, FieldNode } from 'graphql';
import { GraphQLError, Kind, getOperationAST } from 'graphql';
import { getArgumentValues } from 'graphql/execution/values.js';
import type { GatewayContext } from './context.ts';
import type { EventHub, ListenSpec } from './event-hub.ts';
import { PushQueue } from './push-queue.ts';

/** Runs a query through the gateway (federation), as the subscribing client. */
export type QueryExecutor = (query: DocumentNode, variables: Record<string, unknown> | undefined, context: GatewayContext) => Promise<ExecutionResult>;

export interface EventSubscriptionsOptions {
  hub: EventHub;
  execute: QueryExecutor;
  logger: Logger;
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

  private stream(s: {
    binding: SubscriptionBinding;
    query: DocumentNode;
    stateQuery: DocumentNode;
    variables: Record<string, unknown> | undefined;
    context: GatewayContext;
    responseKey: string;
    match: { path: readonly string[]; value: string }[];
    /** The entity's key, when the arguments give it. */
    key: string | undefined;
  }): AsyncGenerator<ExecutionResult> {
    const { hub, execute, logger } = this.options;
    const { binding } = s;
    const pending: Envelope[] = [];
    let wake: (() => void) | undefined;
    // Only the subscriber's own tenant's events (the hub's index); the query is tenant-scoped as well.
    const spec: ListenSpec = { events: binding.events, tenantId: s.context.tenantId, ...(s.match[0] ? { index: s.match[0] } : {}) };
    const stopListening = hub.listen(spec, (event) => {
      if (!s.match.every((m) => keyValue(valueAt(event.data, m.path)) === m.value)) return;
      if (binding.where && !conditionHolds(binding.where, event.data)) return;
      pending.push(event);
      wake?.();
    });
    // The client going away also ends a wait for the next event.
    const queue = new PushQueue<ExecutionResult>(() => {
      stopListening();
      wake?.();
    });
    // Resolves with the next event, or undefined once the client has gone.
    const nextEvent = (): Promise<Envelope | undefined> =>
      new Promise((resolve) => {
        if (pending.length > 0 || queue.closed) return resolve(pending.shift());
        wake = () => {
          wake = undefined;
          resolve(pending.shift());
        };
      });
    const notFound = (id: string) => new GraphQLError(`${binding.entity} ${id} not found`, { extensions: { code: ApiErrorCode.NOT_FOUND, type: binding.entity, id } });
    const variablesFor = (key: string | undefined) => (key === undefined ? s.variables : { ...s.variables, [KEY_VARIABLE]: key });
    const completes = (hidden: Record<string, unknown>) => binding.completeWhen !== undefined && conditionHolds(binding.completeWhen, hidden);

    /**
     * Resolve the client's selection for the entity `key`; send it unless the mode says not to.
     * Returns what it read ({ state, done }), 'gone' when the entity is not there (NOT_FOUND
     * sent for a keyed stream), undefined when the read failed (its errors sent).
     */
    const emit = async (event: Envelope | undefined, key: string | undefined, last: string | undefined): Promise<{ state: string; done: boolean } | 'gone' | undefined> => {
      // The message continues the trace of the event that caused it (the upload's, end to end).
      const result = await withSpan(`gateway subscription ${binding.field}`, SpanKind.CONSUMER, event?.traceparent, { 'graphql.operation.type': 'subscription', ...(key !== undefined ? { 'tributary.entity.key': key } : {}) }, () =>
        execute(s.query, variablesFor(key), s.context),
      );
      const data = result.data as Record<string, Record<string, unknown> | null> | null | undefined;
      const value = data?.[s.responseKey];
      if (data && value === null && !result.errors?.length) {
        if (s.key !== undefined) queue.push({ data: null, errors: [notFound(s.key)] });
        return 'gone';
      }
      if (!value) {
        queue.push(result);
        return undefined;
      }
      const hidden = takeHidden(value);
      const state = JSON.stringify(binding.state ? hidden : value);
      const done = completes(hidden);
      const send = binding.send === 'EVERY' || (binding.send === 'CHANGES' ? state !== last : done);
      if (send) queue.push(result);
      return { state, done };
    };

    void (async () => {
      try {
        let last: string | undefined;
        // A known entity is read first: it may not exist, or be complete already. A tenant-wide
        // value is read first when there is something to learn from it.
        const known = s.key !== undefined || (!binding.key && (binding.initial || binding.completeWhen !== undefined || binding.state !== undefined));
        if (known) {
          if (binding.initial) {
            // Sent first: the whole message is the read.
            const read = await emit(undefined, s.key, undefined);
            if (read === 'gone') {
              if (s.key !== undefined) return;
            } else if (!read || read.done) return;
            else last = read.state;
          } else {
            const current = await execute(s.stateQuery, variablesFor(s.key), s.context);
            // A failed read is not "not found": report it rather than say NOT_FOUND.
            if (current.errors?.length) {
              queue.push({ errors: current.errors });
              return;
            }
            const value = (current.data as Record<string, Record<string, unknown> | null> | undefined)?.[s.responseKey];
            if (value === null || value === undefined) {
              if (s.key !== undefined) {
                queue.push({ data: null, errors: [notFound(s.key)] });
                return;
              }
            } else {
              const hidden = takeHidden(value);
              if (completes(hidden)) {
                const cause = pending.at(-1) ?? (s.match[0] ? hub.latest({ ...spec, index: s.match[0] }) : undefined);
                await emit(cause, s.key, undefined);
                return;
              }
              // CHANGES compares with the state just read: an event that says what was already
              // true (the view catching up with the upload) is no change.
              if (binding.state) last = JSON.stringify(hidden);
            }
          }
        }
        while (!queue.closed) {
          const event = await nextEvent();
          if (!event || queue.closed) continue;
          const key = s.key ?? (binding.key ? keyValue(valueAt(event.data, binding.key)) : undefined);
          if (binding.key && key === undefined) {
            logger.warn({ field: binding.field, dataschema: event.dataschema, id: event.id }, 'subscription: the event has no key at its binding path; ignored');
            continue;
          }
          // A message read after a later change may show that change already: the stream ends
          // on the first message that completes it.
          const read = await emit(event, key, last);
          if (read === 'gone') {
            if (s.key !== undefined) return;
          } else if (read === undefined) {
            // The read failed (its errors were sent): a stream waiting for its completion had it.
            if (binding.send === 'COMPLETION') return;
          } else if (read.done) return;
          else last = read.state;
        }
      } catch (error) {
        logger.error({ err: error instanceof Error ? error.message : String(error), field: binding.field }, 'subscription failed');
        queue.push({ errors: [new GraphQLError('subscription failed', { extensions: { code: ApiErrorCode.INTERNAL_SERVER_ERROR } })] });
      } finally {
        queue.end();
      }
    })();
    return queue;
  }
}

function withoutSelection(field: FieldNode): FieldNode {
  const { selectionSet: _, ...rest } = field;
  return rest;
}
