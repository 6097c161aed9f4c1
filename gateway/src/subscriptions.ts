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

  /** Starts a stream: listening at once, reading and sending on its own from then on. */
  private stream(spec: StreamSpec): AsyncGenerator<ExecutionResult> {
    const stream = new Stream(spec, this.options);
    void stream.run();
    return stream.queue;
  }
}

/** One subscription, as {@link EventSubscriptions.subscribe} read it. */
interface StreamSpec {
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

/**
 * What a read of the client's selection found: the state it showed and whether that completes
 * the stream; 'gone' when the entity is not there (NOT_FOUND sent for a keyed stream); undefined
 * when the read failed (its errors sent).
 */
type Read = { state: string; done: boolean } | 'gone' | undefined;

/** Where a stream stands after its first read: ended, or waiting for events since the state `last`. */
type Start = { end: true } | { end: false; last: string | undefined };

/**
 * A running subscription: the events it listens for, buffered until it reads them; its first
 * read; then one read of the client's selection per matching event, until it completes or the
 * client goes.
 */
class Stream {
  /** What the client receives; its `return()` (the client going) stops the listening. */
  readonly queue: PushQueue<ExecutionResult>;
  private readonly pending: Envelope[] = [];
  private wake: (() => void) | undefined;
  private readonly listening: ListenSpec;
  private readonly binding: SubscriptionBinding;

  constructor(
    private readonly s: StreamSpec,
    private readonly options: EventSubscriptionsOptions,
  ) {
    this.binding = s.binding;
    // Only the subscriber's own tenant's events (the hub's index); the query is tenant-scoped as well.
    this.listening = { events: s.binding.events, tenantId: s.context.tenantId, ...(s.match[0] ? { index: s.match[0] } : {}) };
    const stopListening = options.hub.listen(this.listening, (event) => this.receive(event));
    // The client going away also ends a wait for the next event.
    this.queue = new PushQueue<ExecutionResult>(() => {
      stopListening();
      this.wake?.();
    });
  }

  async run(): Promise<void> {
    try {
      const start = await this.start();
      if (!start.end) await this.follow(start.last);
    } catch (error) {
      this.options.logger.error({ err: error instanceof Error ? error.message : String(error), field: this.binding.field }, 'subscription failed');
      this.queue.push({ errors: [new GraphQLError('subscription failed', { extensions: { code: ApiErrorCode.INTERNAL_SERVER_ERROR } })] });
    } finally {
      this.queue.end();
    }
  }

  private receive(event: Envelope): void {
    if (!this.s.match.every((m) => keyValue(valueAt(event.data, m.path)) === m.value)) return;
    if (this.binding.where && !conditionHolds(this.binding.where, event.data)) return;
    this.pending.push(event);
    this.wake?.();
  }

  /** Resolves with the next event, or undefined once the client has gone. */
  private nextEvent(): Promise<Envelope | undefined> {
    return new Promise((resolve) => {
      if (this.pending.length > 0 || this.queue.closed) return resolve(this.pending.shift());
      this.wake = () => {
        this.wake = undefined;
        resolve(this.pending.shift());
      };
    });
  }

  /**
   * A known entity is read first: it may not exist, or be complete already. A tenant-wide value
   * is read first when there is something to learn from it.
   */
  private async start(): Promise<Start> {
    const { binding } = this;
    const known = this.s.key !== undefined || (!binding.key && (binding.initial || binding.completeWhen !== undefined || binding.state !== undefined));
    if (!known) return { end: false, last: undefined };
    return binding.initial ? this.sendFirst() : this.readState();
  }

  /** Sent first: the whole message is the read. */
  private async sendFirst(): Promise<Start> {
    const read = await this.emit(undefined, this.s.key, undefined);
    if (read === 'gone') return this.s.key !== undefined ? { end: true } : { end: false, last: undefined };
    if (!read || read.done) return { end: true };
    return { end: false, last: read.state };
  }

  /** Not sent first: the hidden fields alone are read, to learn whether the stream is over already. */
  private async readState(): Promise<Start> {
    const { s, binding } = this;
    const current = await this.options.execute(s.stateQuery, this.variablesFor(s.key), s.context);
    // A failed read is not "not found": report it rather than say NOT_FOUND.
    if (current.errors?.length) {
      this.queue.push({ errors: current.errors });
      return { end: true };
    }
    const value = (current.data as Record<string, Record<string, unknown> | null> | undefined)?.[s.responseKey];
    if (value === null || value === undefined) {
      if (s.key === undefined) return { end: false, last: undefined };
      this.queue.push({ data: null, errors: [this.notFound(s.key)] });
      return { end: true };
    }
    const hidden = takeHidden(value);
    if (this.completes(hidden)) {
      const cause = this.pending.at(-1) ?? (s.match[0] ? this.options.hub.latest({ ...this.listening, index: s.match[0] }) : undefined);
      await this.emit(cause, s.key, undefined);
      return { end: true };
    }
    // CHANGES compares with the state just read: an event that says what was already true (the
    // view catching up with the upload) is no change.
    return { end: false, last: binding.state ? JSON.stringify(hidden) : undefined };
  }

  /** One read per matching event, until a message completes the stream or the client goes. */
  private async follow(last: string | undefined): Promise<void> {
    const { s, binding } = this;
    while (!this.queue.closed) {
      const event = await this.nextEvent();
      if (!event || this.queue.closed) continue;
      const key = s.key ?? (binding.key ? keyValue(valueAt(event.data, binding.key)) : undefined);
      if (binding.key && key === undefined) {
        this.options.logger.warn({ field: binding.field, dataschema: event.dataschema, id: event.id }, 'subscription: the event has no key at its binding path; ignored');
        continue;
      }
      // A message read after a later change may show that change already: the stream ends on
      // the first message that completes it.
      const read = await this.emit(event, key, last);
      if (read === 'gone') {
        if (s.key !== undefined) return;
      } else if (read === undefined) {
        // The read failed (its errors were sent): a stream waiting for its completion had it.
        if (binding.send === 'COMPLETION') return;
      } else if (read.done) return;
      else last = read.state;
    }
  }

  /** Resolve the client's selection for the entity `key`; send it unless the mode says not to. */
  private async emit(event: Envelope | undefined, key: string | undefined, last: string | undefined): Promise<Read> {
    const { s, binding } = this;
    // The message continues the trace of the event that caused it (the upload's, end to end).
    const result = await withSpan(`gateway subscription ${binding.field}`, SpanKind.CONSUMER, event?.traceparent, { 'graphql.operation.type': 'subscription', ...(key !== undefined ? { 'tributary.entity.key': key } : {}) }, () =>
      this.options.execute(s.query, this.variablesFor(key), s.context),
    );
    const data = result.data as Record<string, Record<string, unknown> | null> | null | undefined;
    const value = data?.[s.responseKey];
    if (data && value === null && !result.errors?.length) {
      if (s.key !== undefined) this.queue.push({ data: null, errors: [this.notFound(s.key)] });
      return 'gone';
    }
    if (!value) {
      this.queue.push(result);
      return undefined;
    }
    const hidden = takeHidden(value);
    const state = JSON.stringify(binding.state ? hidden : value);
    const done = this.completes(hidden);
    const send = binding.send === 'EVERY' || (binding.send === 'CHANGES' ? state !== last : done);
    if (send) this.queue.push(result);
    return { state, done };
  }

  private notFound(id: string): GraphQLError {
    return new GraphQLError(`${this.binding.entity} ${id} not found`, { extensions: { code: ApiErrorCode.NOT_FOUND, type: this.binding.entity, id } });
  }

  private variablesFor(key: string | undefined): Record<string, unknown> | undefined {
    return key === undefined ? this.s.variables : { ...this.s.variables, [KEY_VARIABLE]: key };
  }

  private completes(hidden: Record<string, unknown>): boolean {
    return this.binding.completeWhen !== undefined && conditionHolds(this.binding.completeWhen, hidden);
  }
}

function withoutSelection(field: FieldNode): FieldNode {
  const { selectionSet: _, ...rest } = field;
  return rest;
}
