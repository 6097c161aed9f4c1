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
