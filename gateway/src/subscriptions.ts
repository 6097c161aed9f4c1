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

const STATUS_QUERY = parse('query TributaryJobStatus($id: ID!) { job(id: $id) { status attempts progress { done total } } }');

/** What jobUpdated reports a change of: `STATUS/attempts/done:total`. */
const stateOf = (job: { status: unknown; attempts: unknown; progress?: { done: number; total: number } | null | undefined }) =>
  `${String(job.status)}/${String(job.attempts)}/${job.progress ? `${job.progress.done}:${job.progress.total}` : ''}`;

export interface JobSubscriptionsOptions {
  hub: JobEventHub;
  execute: QueryExecutor;
  logger: Logger;
}

/**
 * `jobCompleted` and `jobUpdated` over graphql-ws. Apollo Gateway cannot execute subscriptions,
 * so each is turned into the equivalent query (`subscription { jobCompleted(jobId: $id) {…} }`
 * → `query { jobCompleted: job(id: $id) {…} }`, same variables and fragments) and that query
 * runs through the gateway whenever the job changes: the client's whole selection is resolved
 * across subgraphs, exactly as a query would be.
 *
 * The listener is registered before the current state is read, so a job that finishes between
 * "subscribe" and "read" is never missed. The read answers null only for a job that does not
 * exist (`job(id:)` is answered by the service that creates jobs, not by the job view, which may
 * lag): that is NOT_FOUND at once; any other job is waited for, however long its events take.
 */
export class JobSubscriptions {
  constructor(private readonly options: JobSubscriptionsOptions) {}

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
    // The client going away also ends a wait for the next event.
    const queue = new PushQueue<ExecutionResult>(() => {
      stopListening();
      wake?.();
    });
    // Resolves with the next event, or undefined once the client has gone.
    const nextEvent = (): Promise<JobEvent | undefined> =>
      new Promise((resolve) => {
        if (pending.length > 0 || queue.closed) return resolve(pending.shift());
        wake = () => {
          wake = undefined;
          resolve(pending.shift());
        };
      });
    /**
     * Run the client's selection and send it, unless it shows the state `unchanged` (jobUpdated
     * reports changes only). Returns the state it resolved ({@link stateOf}), null when the
     * job is gone (NOT_FOUND, sent), undefined when the read failed (its errors sent).
     */
    const emit = async (event: JobEvent | undefined, unchanged?: string): Promise<string | null | undefined> => {
      // The message continues the trace of the event that caused it (the upload's, end to end).
      const result = await withSpan(`gateway subscription ${s.field}`, SpanKind.CONSUMER, event?.traceparent, { 'graphql.operation.type': 'subscription', 'tributary.job.id': s.jobId }, () =>
        execute(s.query, s.variables, s.context),
      );
      const data = result.data as Record<string, Record<string, unknown> | null> | null | undefined;
      const job = data?.[s.responseKey];
      if (data && job === null && !result.errors?.length) {
        queue.push({ data: null, errors: [notFoundError(s.jobId)] });
        return null;
      }
      let state: string | undefined;
      if (job) {
        state = stateOf({ status: job[STATE_STATUS], attempts: job[STATE_ATTEMPTS], progress: job[STATE_PROGRESS] as { done: number; total: number } | null });
        delete job[STATE_STATUS];
        delete job[STATE_ATTEMPTS];
        delete job[STATE_PROGRESS];
      }
      if (state === undefined || state !== unchanged) queue.push(result);
      return state;
    };
    const isTerminal = (state: string) => TERMINAL.has(state.slice(0, state.indexOf('/')));

    void (async () => {
      try {
        const current = await execute(STATUS_QUERY, { id: s.jobId }, s.context);
        // A failed read is not "not found": report it rather than say NOT_FOUND.
        if (current.errors?.length) {
          queue.push({ errors: current.errors });
          return;
        }
        const job = (current.data as { job: { status: string; attempts: number; progress: { done: number; total: number } | null } | null } | undefined)?.job;
        if (!job) {
          queue.push({ data: null, errors: [notFoundError(s.jobId)] });
          return;
        }
        if (TERMINAL.has(job.status)) {
          await emit(pending.find((e) => TERMINAL.has(e.job.status)) ?? hub.latest(s.jobId, s.context.tenantId));
          return;
        }
        // jobUpdated reports changes from the state just read. An event that says what was
        // already shown (the job view catching up with the upload) is none; nor is a message
        // whose selection, read after a later change, showed that change already: the stream
        // ends on the first message that shows the job finished.
        let last = stateOf(job);
        while (!queue.closed) {
          const event = await nextEvent();
          if (!event || queue.closed) continue;
          const terminal = TERMINAL.has(event.job.status);
          if (s.once ? !terminal : stateOf(event.job) === last) continue;
          const state = await emit(event, s.once ? undefined : last);
          if (state === null || terminal || (state !== undefined && isTerminal(state))) return;
          if (state !== undefined) last = state;
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

/** Aliases of the fields the stream decides by, added to the client's selection and removed from each message. */
const STATE_STATUS = '_tributaryStatus';
const STATE_ATTEMPTS = '_tributaryAttempts';
const STATE_PROGRESS = '_tributaryProgress';

function withStateFields(field: FieldNode): FieldNode {
  const hidden = (alias: string, name: string, fields?: string[]): FieldNode => ({
    kind: Kind.FIELD,
    alias: { kind: Kind.NAME, value: alias },
    name: { kind: Kind.NAME, value: name },
    ...(fields ? { selectionSet: { kind: Kind.SELECTION_SET, selections: fields.map((f): FieldNode => ({ kind: Kind.FIELD, name: { kind: Kind.NAME, value: f } })) } } : {}),
  });
  const selections = [
    ...(field.selectionSet?.selections ?? []),
    hidden(STATE_STATUS, 'status'),
    hidden(STATE_ATTEMPTS, 'attempts'),
    hidden(STATE_PROGRESS, 'progress', ['done', 'total']),
  ];
  return { ...field, selectionSet: { kind: Kind.SELECTION_SET, selections } };
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
  const selectionSet: SelectionSetNode = { kind: Kind.SELECTION_SET, selections: [withStateFields(jobField)] };
  const query: OperationDefinitionNode = { ...operation, operation: 'query' as OperationDefinitionNode['operation'], selectionSet };
  const fragments = document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
  return { kind: Kind.DOCUMENT, definitions: [query, ...fragments] };
}

