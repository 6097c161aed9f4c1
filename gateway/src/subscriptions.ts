import type { ExecutionArgs, ExecutionResult, FieldNode, OperationDefinitionNode, SelectionSetNode } from 'graphql';
import { GraphQLError, Kind, getOperationAST, parse, type DocumentNode } from 'graphql';
import { getArgumentValues } from 'graphql/execution/values.js';
import { ApiErrorCode, type Logger } from '@tributary/core';
import { SpanKind, withSpan } from '@tributary/core/tracing';
import type { JobEvent, JobEventHub } from './job-events.ts';
import { PushQueue } from './push-queue.ts';
import type { GatewayContext } from './context.ts';

/** Runs a query through the gateway (federation), as the subscribing client. */
export type QueryExecutor = (query: DocumentNode, variables: Record<string, unknown> | undefined, context: GatewayContext) => Promise<ExecutionResult>;

const TERMINAL = new Set(['COMPLETED', 'FAILED']);

const STATUS_QUERY = parse('query TributaryJobStatus($id: ID!) { job(id: $id) { status } }');

export interface JobSubscriptionsOptions {
  hub: JobEventHub;
  execute: QueryExecutor;
  logger: Logger;
  /**
   * How long a subscription to a job the job view does not know yet waits for its first event
   * before answering NOT_FOUND. A client that subscribes right after `uploadDocument` can be
   * faster than the job view. Default 5 000 ms.
   */
  notFoundGraceMs?: number;
}

/**
 * `jobCompleted` and `jobUpdated` over graphql-ws. Apollo Gateway cannot execute subscriptions,
 * so each is turned into the equivalent query (`subscription { jobCompleted(jobId: $id) {…} }`
 * → `query { jobCompleted: job(id: $id) {…} }`, same variables and fragments) and that query
 * runs through the gateway whenever the job changes: the client's whole selection is resolved
 * across subgraphs, exactly as a query would be.
 *
 * The listener is registered before the current state is read, so a job that finishes between
 * "subscribe" and "read" is never missed.
 */
export class JobSubscriptions {
  private readonly graceMs: number;

  constructor(private readonly options: JobSubscriptionsOptions) {
    this.graceMs = options.notFoundGraceMs ?? 5_000;
  }

  subscribe(args: ExecutionArgs): AsyncGenerator<ExecutionResult> | ExecutionResult {
    const operation = getOperationAST(args.document, args.operationName);
    const field = operation?.selectionSet.selections[0];
    if (!operation || operation.operation !== 'subscription' || !field || field.kind !== Kind.FIELD) {
      return { errors: [new GraphQLError('expected a subscription with one root field', { extensions: { code: ApiErrorCode.BAD_USER_INPUT } })] };
    }
    const rootField = args.schema.getSubscriptionType()?.getFields()[field.name.value];
    if (!rootField || (field.name.value !== 'jobCompleted' && field.name.value !== 'jobUpdated')) {
      return { errors: [new GraphQLError(`unknown subscription field ${field.name.value}`, { extensions: { code: ApiErrorCode.BAD_USER_INPUT } })] };
    }
    const jobId = String(getArgumentValues(rootField, field, args.variableValues ?? {}).jobId);
    const query = toJobQuery(args.document, operation, field);
    const responseKey = field.alias?.value ?? field.name.value;
    const context = args.contextValue as GatewayContext;
    const variables = (args.variableValues ?? undefined) as Record<string, unknown> | undefined;
    const once = field.name.value === 'jobCompleted';
    return this.stream({ jobId, query, variables, context, responseKey, once, field: field.name.value });
  }

  private stream(s: { jobId: string; query: DocumentNode; variables: Record<string, unknown> | undefined; context: GatewayContext; responseKey: string; once: boolean; field: string }): AsyncGenerator<ExecutionResult> {
    const { hub, execute, logger } = this.options;
    const pending: JobEvent[] = [];
    let wake: (() => void) | undefined;
    const stopListening = hub.listen(s.jobId, (event) => {
      // Only the subscriber's own tenant's events; the query below is tenant-scoped as well.
      if (event.tenantId !== s.context.tenantId) return;
      pending.push(event);
      wake?.();
    });
    const queue = new PushQueue<ExecutionResult>(stopListening);
    const nextEvent = (timeoutMs: number): Promise<JobEvent | undefined> =>
      new Promise((resolve) => {
        const take = () => {
          wake = undefined;
          clearTimeout(timer);
          resolve(pending.shift());
        };
        if (pending.length > 0 || queue.closed) return resolve(pending.shift());
        const timer = setTimeout(take, timeoutMs);
        wake = take;
      });
    const emit = async (event?: JobEvent) => {
      // The message continues the trace of the event that caused it (the upload's, end to end).
      const result = await withSpan(`gateway subscription ${s.field}`, SpanKind.CONSUMER, event?.traceparent, { 'graphql.operation.type': 'subscription', 'tributary.job.id': s.jobId }, () =>
        execute(s.query, s.variables, s.context),
      );
      const data = result.data as Record<string, unknown> | null | undefined;
      if (data && data[s.responseKey] === null && !result.errors?.length) {
        queue.push({ data: null, errors: [notFoundError(s.jobId)] });
      } else queue.push(result);
    };

    void (async () => {
      try {
        const current = await execute(STATUS_QUERY, { id: s.jobId }, s.context);
        // A failed read is not "not found yet": report it rather than wait and say NOT_FOUND.
        if (current.errors?.length) {
          queue.push({ errors: current.errors });
          return;
        }
        let status = (current.data as { job: { status: string } | null } | undefined)?.job?.status;
        if (!status) {
          // Not in the job view (yet): wait for its first event, briefly.
          const first = await nextEvent(this.graceMs);
          if (queue.closed) return;
          if (!first) {
            queue.push({ data: null, errors: [notFoundError(s.jobId)] });
            return;
          }
          pending.unshift(first);
          status = first.job.status;
          if (!s.once) pending.shift(); // jobUpdated reports changes from here on
        }
        if (TERMINAL.has(status)) {
          await emit(pending.find((e) => TERMINAL.has(e.job.status)) ?? hub.latest(s.jobId, s.context.tenantId));
          return;
        }
        while (!queue.closed) {
          const event = await nextEvent(60_000);
          if (!event || queue.closed) continue;
          const terminal = TERMINAL.has(event.job.status);
          if (s.once && !terminal) continue;
          await emit(event);
          if (terminal) return;
        }
      } catch (error) {
        logger.error({ err: error instanceof Error ? error.message : String(error), jobId: s.jobId }, 'subscription failed');
        queue.push({ errors: [new GraphQLError('subscription failed', { extensions: { code: ApiErrorCode.INTERNAL_SERVER_ERROR } })] });
      } finally {
        queue.end();
      }
    })();
    return queue;
  }
}

function notFoundError(jobId: string): GraphQLError {
  return new GraphQLError(`Job ${jobId} not found`, { extensions: { code: ApiErrorCode.NOT_FOUND, type: 'Job', id: jobId } });
}

/** `subscription Op($v…) { alias: jobX(jobId: …) {…} }` + fragments → `query Op($v…) { alias: job(id: …) {…} }` + fragments. */
export function toJobQuery(document: DocumentNode, operation: OperationDefinitionNode, field: FieldNode): DocumentNode {
  const jobIdArgument = field.arguments?.find((a) => a.name.value === 'jobId');
  const jobField: FieldNode = {
    kind: Kind.FIELD,
    alias: { kind: Kind.NAME, value: field.alias?.value ?? field.name.value },
    name: { kind: Kind.NAME, value: 'job' },
    arguments: jobIdArgument ? [{ ...jobIdArgument, name: { kind: Kind.NAME, value: 'id' } }] : [],
    ...(field.directives ? { directives: field.directives } : {}),
    ...(field.selectionSet ? { selectionSet: field.selectionSet } : {}),
  };
  const selectionSet: SelectionSetNode = { kind: Kind.SELECTION_SET, selections: [jobField] };
  const query: OperationDefinitionNode = { ...operation, operation: 'query' as OperationDefinitionNode['operation'], selectionSet };
  const fragments = document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
  return { kind: Kind.DOCUMENT, definitions: [query, ...fragments] };
}

