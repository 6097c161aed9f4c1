/**
 * Error codes of @tributary/ai. Callers match on `code` (or `name`), not on message text.
 * Each code says once whether retrying can help, so every thrower agrees.
 */
export const AiErrorCode = {
  /** The text is empty or whitespace only. */
  EMPTY_INPUT: 'EMPTY_INPUT',
} as const;
export type AiErrorCode = (typeof AiErrorCode)[keyof typeof AiErrorCode];

const unrecoverableCodes: Readonly<Record<AiErrorCode, boolean>> = {
  EMPTY_INPUT: true,
};

/**
 * An error from an analyzer. `unrecoverable` is the marker `@tributary/core`'s `isUnrecoverable`
 * looks for (this package does not depend on core): a consumer dead-letters at once instead of retrying.
 */
export class AiError extends Error {
  override name = 'AiError';
  readonly unrecoverable: boolean;
  constructor(
    readonly code: AiErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.unrecoverable = unrecoverableCodes[code];
  }
}

/** Whether `error` is an {@link AiError}, also when it comes from another copy of this package. */
export function isAiError(error: unknown): error is AiError {
  return error instanceof AiError || (error instanceof Error && error.name === 'AiError' && 'code' in error);
}
