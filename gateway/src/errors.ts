import type { GraphQLFormattedError } from 'graphql';
import { LimitCode } from './limits.ts';

const limitCodes = new Set<string>(Object.values(LimitCode));

/**
 * What clients see of an error (Apollo Server's `formatError`). Apollo Server stamps every
 * validation error GRAPHQL_VALIDATION_FAILED; restore the limit codes so clients can tell "too
 * deep" from "no such field". In production, internal errors say no more than that.
 */
export function formatError(production: boolean) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const original = (error as { originalError?: { extensions?: { code?: unknown } } } | undefined)?.originalError;
    const code = original?.extensions?.code;
    if (typeof code === 'string' && limitCodes.has(code)) return { ...formatted, extensions: { ...formatted.extensions, code } };
    if (!production) return formatted;
    if (formatted.extensions?.code === 'INTERNAL_SERVER_ERROR') {
      return { message: 'internal error', ...(formatted.path ? { path: formatted.path } : {}), extensions: { code: 'INTERNAL_SERVER_ERROR' } };
    }
    // Subgraph errors pass through the gateway: never let one carry a stack trace out.
    if (formatted.extensions && 'stacktrace' in formatted.extensions) {
      const { stacktrace: _stack, ...extensions } = formatted.extensions;
      return { ...formatted, extensions };
    }
    return formatted;
  };
}
