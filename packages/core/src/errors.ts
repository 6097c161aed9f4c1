/**
 * Error codes of @tributary/core. Every error we throw carries one; callers match on
 * `code` (or `name`), not on message text, because errors cross module and process boundaries.
 */
export const CoreErrorCode = {
  CONFIG_INVALID: 'CONFIG_INVALID',
  OUTBOX_NO_TRANSACTION: 'OUTBOX_NO_TRANSACTION',
  PUBLISH_TIMEOUT: 'PUBLISH_TIMEOUT',
  PUBLISH_NACKED: 'PUBLISH_NACKED',
  TRANSPORT_CLOSED: 'TRANSPORT_CLOSED',
  HANDLER_FAILED: 'HANDLER_FAILED',
  DATABASE_UNAVAILABLE: 'DATABASE_UNAVAILABLE',
  QUEUE_NOT_FOUND: 'QUEUE_NOT_FOUND',
  IDEMPOTENCY_NO_TRANSACTION: 'IDEMPOTENCY_NO_TRANSACTION',
  /** A log position older than the log keeps: read the current state again. */
  CURSOR_EXPIRED: 'CURSOR_EXPIRED',
  /** A string that is not a cursor this system issued. */
  CURSOR_INVALID: 'CURSOR_INVALID',
  /** A consumer asked to start from history (`startFrom`) on a transport with no event log. */
  EVENT_LOG_DISABLED: 'EVENT_LOG_DISABLED',
  /** `startFrom` on a consumer whose handler cannot replay history (a staged handler's model calls). */
  HISTORY_UNSUPPORTED: 'HISTORY_UNSUPPORTED',
} as const;
export type CoreErrorCode = (typeof CoreErrorCode)[keyof typeof CoreErrorCode];

/** Base class: an error with a stable machine-readable code. */
export class TributaryError extends Error {
  override name = 'TributaryError';
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Thrown by a handler when retrying cannot help (bad input, a refused budget, a contract breach):
 * the consumer dead-letters the event at once instead of walking the retry tiers. *(BullMQ)*
 */
export class UnrecoverableError extends TributaryError {
  override name = 'UnrecoverableError';
  readonly unrecoverable = true;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * Whether an error says retrying is pointless. Matches on the `unrecoverable` marker and the
 * name as well as `instanceof`, so errors from another copy of this package (or a contract
 * violation from @tributary/contracts) are recognised too.
 */
export function isUnrecoverable(error: unknown): boolean {
  if (error instanceof UnrecoverableError) return true;
  if (typeof error !== 'object' || error === null) return false;
  const e = error as { unrecoverable?: unknown; name?: unknown };
  return e.unrecoverable === true || e.name === 'UnrecoverableError' || e.name === 'ContractViolationError';
}

/** The code of any error: ours, a contract violation, a Node system error, or `INTERNAL`. */
export function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.length > 0) return code;
  }
  return 'INTERNAL';
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A dependency a request can find briefly unreachable: the client should retry, not report a bug. */
export type UnavailableDependency = 'database' | 'broker';

// PostgreSQL: class 08 (connection exception) is matched as a class; these besides it say the
// server is going away, starting up or out of connections.
const DATABASE_STATES = new Set(['57P01', '57P02', '57P03', '53300']);
// Network failures: a resolver's only network peer is its database (the broker is reached only
// through the outbox relay, whose errors carry our codes below).
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
const BROKER_CODES = new Set<string>([CoreErrorCode.TRANSPORT_CLOSED, CoreErrorCode.PUBLISH_TIMEOUT, CoreErrorCode.PUBLISH_NACKED]);
// pg says these with no code at all (knex prefixes the SQL, hence "includes"); knex's pool and
// PGlite after close likewise. Knex reports a transaction whose connection died under its BEGIN
// only by refusing the transaction's next query (the connection's error is lost); none of our code
// queries a transaction it has ended, which is the message's other meaning.
const DATABASE_MESSAGES = [
  'Connection terminated unexpectedly',
  'Transaction query already complete',
  'Connection terminated due to connection timeout',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout exceeded when trying to connect',
  'Unable to acquire a connection',
  'PGlite is closed',
];
const DATABASE_NAMES = new Set(['KnexTimeoutError', 'ConnectionException']);

/** What the error helpers read of an error of any origin. */
export interface ErrorLike {
  code?: unknown;
  name?: unknown;
  message?: unknown;
  originalError?: unknown;
  cause?: unknown;
  errors?: unknown;
}

function dependencyOf(e: ErrorLike): UnavailableDependency | undefined {
  const code = typeof e.code === 'string' ? e.code : '';
  if (code === CoreErrorCode.DATABASE_UNAVAILABLE) return 'database';
  if (BROKER_CODES.has(code)) return 'broker';
  if (DATABASE_STATES.has(code) || /^08[0-9A-Z]{3}$/.test(code) || NETWORK_CODES.has(code)) return 'database';
  if (typeof e.name === 'string' && DATABASE_NAMES.has(e.name)) return 'database';
  const message = typeof e.message === 'string' ? e.message : '';
  if (DATABASE_MESSAGES.some((text) => message.includes(text))) return 'database';
  return undefined;
}

/**
 * Which dependency `error` says is briefly unreachable, if that is what it says: the database (a
 * connection refused, reset or terminated; PostgreSQL shutting down, starting up or out of
 * connections, SQLSTATE class 08, 57P01-57P03, 53300; the pool giving up; our
 * DATABASE_UNAVAILABLE), or the broker (our TRANSPORT_CLOSED, PUBLISH_TIMEOUT, PUBLISH_NACKED).
 * Undefined for anything else: a constraint, bad input, a bug. Looks through what the error wraps
 * (GraphQL's `originalError`, `cause`, an AggregateError's first error) and matches on codes and
 * names, not `instanceof`: these errors come from pg, knex, MikroORM (whose exceptions copy the
 * driver's `code`) and PGlite.
 */
export function unavailableDependency(error: unknown): UnavailableDependency | undefined {
  for (const e of errorChain(error)) {
    const found = dependencyOf(e);
    if (found) return found;
  }
  return undefined;
}

/**
 * `error` and what it wraps, outermost first: GraphQL's `originalError`, `cause`, an
 * AggregateError's first error; at most 8 deep (a chain that loops ends there).
 */
export function* errorChain(error: unknown): Generator<ErrorLike> {
  let current: unknown = error;
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    const e = current as ErrorLike;
    yield e;
    current = e.originalError ?? e.cause ?? (Array.isArray(e.errors) ? e.errors[0] : undefined);
  }
}
