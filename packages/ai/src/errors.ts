/**
 * Error codes of @tributary/ai. Callers match on `code` (or `name`), not on message text.
 * Each code says once whether retrying can help, so every thrower agrees.
 */
export const AiErrorCode = {
  /** The text is empty or whitespace only. */
  EMPTY_INPUT: 'EMPTY_INPUT',
  /** The provider answered 429; `retryAfterMs` says when it will take calls again, if it said. */
  RATE_LIMITED: 'RATE_LIMITED',
  /** A 5xx, a refused or reset connection: the provider is down for now. */
  PROVIDER_UNAVAILABLE: 'PROVIDER_UNAVAILABLE',
  /** The provider did not answer within the per-call timeout. */
  TIMEOUT: 'TIMEOUT',
  /** The provider refused the request itself (400, 401, 403, 404…): a bad key, model or request. */
  PROVIDER_REJECTED: 'PROVIDER_REJECTED',
  /** The reply was not JSON or broke the output schema, twice in a row. */
  INVALID_OUTPUT: 'INVALID_OUTPUT',
  /** The tenant's daily token budget cannot cover the call. */
  BUDGET_EXCEEDED: 'BUDGET_EXCEEDED',
} as const;
export type AiErrorCode = (typeof AiErrorCode)[keyof typeof AiErrorCode];

const unrecoverableCodes: Readonly<Record<AiErrorCode, boolean>> = {
  EMPTY_INPUT: true,
  RATE_LIMITED: false,
  PROVIDER_UNAVAILABLE: false,
  TIMEOUT: false,
  PROVIDER_REJECTED: true,
  INVALID_OUTPUT: true,
  // The budget only refills at the next UTC day: retry tiers of seconds or minutes cannot help.
  BUDGET_EXCEEDED: true,
};

/** Extra facts an {@link AiError} may carry. */
export interface AiErrorOptions {
  cause?: unknown;
  /** Which provider failed (`openai`, …). */
  provider?: string;
  /** How long the provider asked us to wait (429 `Retry-After`), in ms. */
  retryAfterMs?: number;
  /** Tokens the failed call spent anyway (an invalid reply is still billed), for the budget ledger. */
  tokens?: { prompt: number; completion: number };
}

/**
 * An error from an analyzer or embedder. `unrecoverable` is the marker `@tributary/core`'s
 * `isUnrecoverable` looks for: a consumer fails the job at once instead of retrying.
 */
export class AiError extends Error {
  override name = 'AiError';
  readonly unrecoverable: boolean;
  readonly provider: string | undefined;
  readonly retryAfterMs: number | undefined;
  readonly tokens: { prompt: number; completion: number } | undefined;
  constructor(
    readonly code: AiErrorCode,
    message: string,
    options: AiErrorOptions = {},
  ) {
    super(message, 'cause' in options ? { cause: options.cause } : undefined);
    this.unrecoverable = unrecoverableCodes[code];
    this.provider = options.provider;
    this.retryAfterMs = options.retryAfterMs;
    this.tokens = options.tokens;
  }
}

/** Whether `error` is an {@link AiError}, also when it comes from another copy of this package. */
export function isAiError(error: unknown): error is AiError {
  return error instanceof AiError || (error instanceof Error && error.name === 'AiError' && 'code' in error);
}

/** Whether a failed call may succeed when tried again (or on another provider). */
export function isTransientAiError(error: unknown): error is AiError {
  return isAiError(error) && !error.unrecoverable;
}
