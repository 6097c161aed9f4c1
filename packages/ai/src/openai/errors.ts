import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import { AiError } from '../errors.ts';
import { parseRetryAfter } from '../retry.ts';

/**
 * Translates what the `openai` SDK throws into an {@link AiError} with a code. When the caller's
 * signal aborted, its reason is thrown instead, as the {@link Analyzer} contract says.
 */
export function fromOpenAIError(error: unknown, provider: string, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted) return signal.reason;
  // Order matters: the timeout and abort errors are subclasses of the connection error.
  if (error instanceof APIConnectionTimeoutError) return new AiError('TIMEOUT', `${provider}: no reply within the timeout`, { cause: error, provider });
  if (error instanceof APIUserAbortError) return new AiError('TIMEOUT', `${provider}: request aborted`, { cause: error, provider });
  if (error instanceof APIConnectionError) return new AiError('PROVIDER_UNAVAILABLE', `${provider}: ${error.message}`, { cause: error, provider });
  if (error instanceof APIError && error.status !== undefined) {
    const status = error.status;
    const message = `${provider}: ${error.message}`;
    if (status === 429) {
      const retryAfterMs = parseRetryAfter(error.headers);
      return new AiError('RATE_LIMITED', message, { cause: error, provider, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
    }
    if (status === 408) return new AiError('TIMEOUT', message, { cause: error, provider });
    // 409 is OpenAI's "try again" for a conflicting concurrent request; the SDK retries it too.
    if (status >= 500 || status === 409) {
      const retryAfterMs = parseRetryAfter(error.headers);
      return new AiError('PROVIDER_UNAVAILABLE', message, { cause: error, provider, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
    }
    return new AiError('PROVIDER_REJECTED', message, { cause: error, provider });
  }
  return error;
}
