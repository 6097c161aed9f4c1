import { GraphQLError, type GraphQLFieldResolver, type GraphQLScalarType } from 'graphql';
import type { UnavailableDependency } from './errors.ts';

/**
 * A subgraph's resolvers, as `buildSubgraphSchema({ typeDefs, resolvers })` takes them: per type,
 * field resolvers (or `{ resolve, subscribe }`), a custom scalar, or an enum's values. The same
 * shape as @apollo/subgraph's `GraphQLResolverMap`, which its package exports only from `dist/`
 * (issue 27: no deep imports); test/resolvers.test.ts checks that Apollo still takes it.
 */
export interface ResolverMap<TContext = object> {
  [typeName: string]:
    | {
        [fieldName: string]:
          | GraphQLFieldResolver<any, TContext>
          | { requires?: string; resolve?: GraphQLFieldResolver<any, TContext>; subscribe?: GraphQLFieldResolver<any, TContext> };
      }
    | GraphQLScalarType
    | { [enumValue: string]: string | number };
}

/** Error codes on `extensions.code` of GraphQL errors: the public API's error contract. */
export const ApiErrorCode = {
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  NOT_FOUND: 'NOT_FOUND',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  BUDGET_EXCEEDED: 'BUDGET_EXCEEDED',
  /** A dependency was briefly unreachable: HTTP 503, retry after `extensions.retryAfterSeconds` (the `Retry-After` header). */
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
  /** An `Idempotency-Key` sent again with another request body (or by the same user for another mutation's input): HTTP 422. */
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  /** The first request with this `Idempotency-Key` is still running: HTTP 409, retry after `extensions.retryAfterSeconds`. */
  IDEMPOTENCY_KEY_IN_USE: 'IDEMPOTENCY_KEY_IN_USE',
  /** A job that is COMPLETED or FAILED cannot be cancelled. */
  JOB_ALREADY_FINISHED: 'JOB_ALREADY_FINISHED',
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
} as const;
export type ApiErrorCode = (typeof ApiErrorCode)[keyof typeof ApiErrorCode];

/**
 * The HTTP status of a response whose errors carry one of these codes (the first listed code
 * found wins), set by `retryAfterPlugin` on the subgraphs and on the gateway, which passes a
 * subgraph's coded errors on: so the client sees the subgraph's status.
 */
export const API_ERROR_HTTP_STATUS: ReadonlyArray<readonly [ApiErrorCode, number]> = [
  [ApiErrorCode.SERVICE_UNAVAILABLE, 503],
  [ApiErrorCode.IDEMPOTENCY_KEY_IN_USE, 409],
  [ApiErrorCode.IDEMPOTENCY_KEY_REUSED, 422],
];

/** Invalid input, naming the offending field (`extensions.field`) so a form can point at it. */
export function badUserInput(message: string, field?: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: ApiErrorCode.BAD_USER_INPUT, ...(field ? { field } : {}) } });
}

/** Seconds a client is told to wait before retrying a request refused with SERVICE_UNAVAILABLE. */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = 1;

/**
 * A request refused because `dependency` is briefly unreachable (see `unavailableDependency`):
 * SERVICE_UNAVAILABLE with `retryAfterSeconds` and the dependency, never INTERNAL_SERVER_ERROR.
 */
export function serviceUnavailable(dependency: UnavailableDependency): GraphQLError {
  return new GraphQLError(`the ${dependency === 'database' ? 'database' : 'event broker'} is unavailable; retry in ${UNAVAILABLE_RETRY_AFTER_SECONDS} s`, {
    extensions: { code: ApiErrorCode.SERVICE_UNAVAILABLE, retryAfterSeconds: UNAVAILABLE_RETRY_AFTER_SECONDS, dependency },
  });
}

/** A missing (or, to the caller, invisible) object. Same shape whatever the reason, so ids cannot be probed. */
export function notFound(type: string, id: string): GraphQLError {
  return new GraphQLError(`${type} ${id} not found`, { extensions: { code: ApiErrorCode.NOT_FOUND, type, id } });
}

/** Opaque cursors for connections: base64url of a JSON tuple. */
export function encodeCursor(values: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify(values)).toString('base64url');
}

export function decodeCursor(cursor: string, arity: number): (string | number)[] {
  try {
    const values: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(values) && values.length === arity && values.every((v) => typeof v === 'string' || typeof v === 'number')) return values;
  } catch {
    /* fall through */
  }
  throw badUserInput('`after` is not a cursor this API returned', 'after');
}

/** Validate `first`: 1..max, default `fallback`. */
export function pageSize(first: number | null | undefined, fallback = 20, max = 100): number {
  if (first === null || first === undefined) return fallback;
  if (!Number.isInteger(first) || first < 1 || first > max) throw badUserInput(`\`first\` must be between 1 and ${max}`, 'first');
  return first;
}

/** A Relay-style page. */
export interface Connection<N> {
  edges: { cursor: string; node: N }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

/**
 * Keyset pagination, newest first, over rows ordered by (createdAt desc, id desc): stable under
 * concurrent inserts, unlike offsets. `find` gets the extra filter for rows after the cursor and
 * the number of rows to fetch (one more than the page, to learn whether another page follows).
 */
export async function newestFirstPage<R extends { createdAt: Date; id: string }, N>(
  args: { first?: number | null; after?: string | null },
  find: (after: Record<string, unknown> | undefined, limit: number) => Promise<R[]>,
  toNode: (row: R) => N,
): Promise<Connection<N>> {
  const limit = pageSize(args.first);
  let after: Record<string, unknown> | undefined;
  if (args.after) {
    const [createdAt, id] = decodeCursor(args.after, 2);
    const at = new Date(String(createdAt));
    if (Number.isNaN(at.getTime()) || typeof id !== 'string') throw badUserInput('`after` is not a cursor this API returned', 'after');
    after = { $or: [{ createdAt: { $lt: at } }, { createdAt: at, id: { $lt: id } }] };
  }
  const rows = await find(after, limit + 1);
  const edges = rows.slice(0, limit).map((row) => ({ cursor: encodeCursor([row.createdAt.toISOString(), row.id]), node: toNode(row) }));
  return { edges, pageInfo: { hasNextPage: rows.length > limit, endCursor: edges.at(-1)?.cursor ?? null } };
}
