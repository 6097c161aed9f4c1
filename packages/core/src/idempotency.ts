import { createHash } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { GraphQLError } from 'graphql';
import { queryRows, queryRun } from './db/sql.ts';
import { CoreErrorCode, errorChain, TributaryError } from './errors.ts';
import { ApiErrorCode } from './graphql.ts';

/** How long a key is kept, hours (`IDEMPOTENCY_KEY_TTL_HOURS`). Default 24, as the IETF draft suggests. */
export const DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS = 24;
/** How long a retry waits for the first request with its key to finish before it is told to retry (409), ms. Default 5 000. */
export const DEFAULT_IDEMPOTENCY_WAIT_MS = 5_000;
/** Seconds a client is told to wait (Retry-After) when the first request with its key is still running. */
export const IDEMPOTENCY_RETRY_AFTER_SECONDS = 1;

export interface IdempotencyRequest {
  /**
   * Whose key it is and for what: tenant, user and mutation field (see {@link idempotencyScope}).
   * The same key in another scope is another key.
   */
  scope: string;
  /** The client's `Idempotency-Key`. */
  key: string;
  /** What the request asked for ({@link requestHash}): a retry must ask for the same. */
  requestHash: string;
  /** Keys older than this count as gone (pruned or not yet). Default {@link DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS}. */
  ttlHours?: number;
  /** Default {@link DEFAULT_IDEMPOTENCY_WAIT_MS}. */
  waitMs?: number;
}

/** What {@link idempotent} did: ran the work, or replayed the first request's stored response. */
export type IdempotentOutcome<T> = { replayed: false; response: T } | { replayed: true; response: T };

/** The scope of a key: its tenant, its user and the mutation field, unambiguously joined. */
export function idempotencyScope(tenantId: string, userId: string | null, field: string): string {
  return JSON.stringify([tenantId, userId ?? '', field]);
}

/** A canonical JSON text of a plain value: object keys sorted, `undefined` members left out. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** The sha256 (hex) of the canonical JSON of what a request asks for. */
export function requestHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}

/** The key came back with another request body: HTTP 422. */
export function idempotencyKeyReused(): GraphQLError {
  return new GraphQLError('this Idempotency-Key was used for a different request; use a new key for a new request', {
    extensions: { code: ApiErrorCode.IDEMPOTENCY_KEY_REUSED },
  });
}

/** The first request with the key is still running: HTTP 409 with Retry-After. */
export function idempotencyKeyInUse(): GraphQLError {
  return new GraphQLError(`a request with this Idempotency-Key is still being processed; retry in ${IDEMPOTENCY_RETRY_AFTER_SECONDS} s`, {
    extensions: { code: ApiErrorCode.IDEMPOTENCY_KEY_IN_USE, retryAfterSeconds: IDEMPOTENCY_RETRY_AFTER_SECONDS },
  });
}

/** 55P03 lock_not_available: lock_timeout ran out, on the error or one it wraps. */
function isLockTimeout(error: unknown): boolean {
  for (const e of errorChain(error)) if (e.code === '55P03') return true;
  return false;
}

/**
 * Run `work` once per idempotency key, inside the caller's transaction (`em` must be in one):
 * the key's row is inserted first; the work runs and its JSON response is stored in the same
 * row, so both commit together or not at all. A request whose key is already there gets the
 * stored response back instead (`replayed: true`), the work not run: also when the first
 * request's process died after its commit, before its answer.
 *
 * Concurrent requests with one key: PostgreSQL's primary key makes the second insert wait until
 * the first transaction ends (rolled back: the second proceeds as the first; committed: it reads
 * the row). It waits at most `waitMs` (`SET LOCAL lock_timeout`), then `IDEMPOTENCY_KEY_IN_USE`
 * (409, Retry-After 1). On PGlite (one connection) the second cannot start its transaction before
 * the first ends, so it never waits on the row.
 *
 * @throws GraphQLError IDEMPOTENCY_KEY_REUSED (422) when the key's row holds another `requestHash`
 * @throws GraphQLError IDEMPOTENCY_KEY_IN_USE (409) when the first request is still running
 */
export async function idempotent<T>(em: EntityManager, request: IdempotencyRequest, work: () => Promise<T>): Promise<IdempotentOutcome<T>> {
  if (!em.getTransactionContext()) throw new TributaryError(CoreErrorCode.IDEMPOTENCY_NO_TRANSACTION, 'idempotent() must run inside the transaction of the work it guards');
  const ttlHours = request.ttlHours ?? DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS;
  const waitMs = Math.max(1, Math.trunc(request.waitMs ?? DEFAULT_IDEMPOTENCY_WAIT_MS));
  let claimed: unknown[];
  await queryRun(em, `set local lock_timeout = ${waitMs}`);
  try {
    // A row past its TTL that the prune has not reached yet is taken over, as if it were gone.
    claimed = await queryRows(
      em,
      `insert into tributary_idempotency (scope, key, request_hash, created_at) values (?, ?, ?, now())
       on conflict (scope, key) do update set request_hash = excluded.request_hash, response = null, created_at = excluded.created_at
       where tributary_idempotency.created_at < now() - make_interval(hours => ?)
       returning 1 as claimed`,
      [request.scope, request.key, request.requestHash, ttlHours],
    );
  } catch (error) {
    if (isLockTimeout(error)) throw idempotencyKeyInUse();
    throw error;
  }
  await queryRun(em, 'set local lock_timeout to default');
  if (claimed.length === 0) {
    const [row] = await queryRows<{ request_hash: string; response: unknown }>(em, 'select request_hash, response from tributary_idempotency where scope = ? and key = ?', [request.scope, request.key]);
    if (!row) throw idempotencyKeyInUse();
    if (row.request_hash !== request.requestHash) throw idempotencyKeyReused();
    // Stored in the transaction that inserted the row: absent only if that row was written by other means.
    if (row.response === null || row.response === undefined) throw idempotencyKeyInUse();
    const response = (typeof row.response === 'string' ? JSON.parse(row.response) : row.response) as T;
    return { replayed: true, response };
  }
  const response = await work();
  await queryRun(em, 'update tributary_idempotency set response = ?::jsonb where scope = ? and key = ?', [JSON.stringify(response ?? null), request.scope, request.key]);
  return { replayed: false, response };
}

/** Delete keys older than `ttlHours`; returns how many. */
export async function pruneIdempotencyKeys(em: EntityManager, ttlHours = DEFAULT_IDEMPOTENCY_KEY_TTL_HOURS): Promise<number> {
  return queryRun(em, 'delete from tributary_idempotency where created_at < now() - make_interval(hours => ?)', [ttlHours]);
}
