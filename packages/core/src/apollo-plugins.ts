import type { ApolloServerPlugin } from '@apollo/server';
import type { GraphQLFormattedError } from 'graphql';
import { metrics } from './metrics.ts';
import { unavailableDependency } from './errors.ts';
import { API_ERROR_HTTP_STATUS, ApiErrorCode, serviceUnavailable } from './graphql.ts';
import { findUnstorableInput, unstorableInputError } from './input.ts';

/**
 * The `Retry-After` (seconds) a response's errors ask for: the largest `extensions.retryAfterSeconds`
 * among them, at least 1 when one is SERVICE_UNAVAILABLE; undefined when none asks.
 */
export function retryAfterSeconds(errors: readonly { extensions?: Record<string, unknown> | undefined }[] | undefined): number | undefined {
  let wait: number | undefined;
  for (const error of errors ?? []) {
    const given = error.extensions?.retryAfterSeconds;
    const seconds = typeof given === 'number' && Number.isFinite(given) && given >= 0 ? Math.ceil(given) : error.extensions?.code === ApiErrorCode.SERVICE_UNAVAILABLE ? 1 : undefined;
    if (seconds !== undefined) wait = Math.max(wait ?? 0, seconds);
  }
  return wait;
}

/**
 * A response with an error coded SERVICE_UNAVAILABLE is answered HTTP 503 (IDEMPOTENCY_KEY_IN_USE
 * 409, IDEMPOTENCY_KEY_REUSED 422: `API_ERROR_HTTP_STATUS`), and any whose errors ask
 * for a wait (SERVICE_UNAVAILABLE, RATE_LIMITED) carries it as `Retry-After` (RFC 9110). The
 * subgraphs and the gateway both use it: a subgraph's SERVICE_UNAVAILABLE reaches the gateway's
 * client as an error of the same code (see FastDataSource), so the client gets the 503 too, even
 * beside the data of fields that succeeded.
 */
export const retryAfterPlugin: ApolloServerPlugin = {
  async requestDidStart() {
    return {
      async willSendResponse({ response }) {
        if (response.body.kind !== 'single') return;
        const errors = response.body.singleResult.errors;
        const wait = retryAfterSeconds(errors);
        for (const [code, status] of API_ERROR_HTTP_STATUS) {
          if (errors?.some((e) => e.extensions?.code === code)) {
            response.http.status = status;
            break;
          }
        }
        if (wait !== undefined) response.http.headers.set('retry-after', String(wait));
      },
    };
  },
};

/**
 * A subgraph's errors as its clients see them: an error that would be INTERNAL_SERVER_ERROR but
 * says the database or the broker is briefly unreachable (`unavailableDependency`) becomes
 * SERVICE_UNAVAILABLE with a retry hint ({@link retryAfterPlugin} makes it a 503); the rest as
 * they are.
 */
export function formatSubgraphError(formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError {
  if (formatted.extensions?.code !== ApiErrorCode.INTERNAL_SERVER_ERROR) return formatted;
  const dependency = unavailableDependency(error);
  if (!dependency) return formatted;
  const refused = serviceUnavailable(dependency);
  return { message: refused.message, ...(formatted.locations ? { locations: formatted.locations } : {}), ...(formatted.path ? { path: formatted.path } : {}), extensions: refused.extensions };
}

/**
 * Refuses, before execution, an operation with a string PostgreSQL cannot store (one holding NUL,
 * U+0000) anywhere in its arguments: BAD_USER_INPUT naming the argument (`extensions.field:
 * "input.title"`), HTTP 400, instead of the database's error as INTERNAL_SERVER_ERROR.
 *
 * Why here, in the factory of every subgraph, and not in the gateway: the limit is the
 * subgraphs' storage's, so every subgraph (a new one too) gets it with no code of its own, and it
 * holds for every caller, not only for requests that came through a gateway. The gateway passes
 * the refusal on with its code (FastDataSource). The price: a multi-subgraph operation is refused
 * only in the part this subgraph was sent (as with any argument a resolver refuses), and a
 * subscription's argument is named as the argument of the lookup the gateway reads it with.
 */
export const refuseUnstorableInput: ApolloServerPlugin = {
  async requestDidStart() {
    return {
      async didResolveOperation({ document, operation, request }) {
        if (!operation) return;
        const found = findUnstorableInput(document, operation, request.variables);
        if (found) throw unstorableInputError(found);
      },
    };
  },
};

/** Times resolvers that do work of their own (not the default property reads). */
export function resolverTimings(service: string): ApolloServerPlugin {
  return {
    async requestDidStart() {
      return {
        async executionDidStart() {
          return {
            willResolveField({ info }) {
              if (!info.parentType.getFields()[info.fieldName]?.resolve && !info.fieldName.startsWith('_')) return;
              const stop = metrics.resolverDuration.startTimer({ service, type: info.parentType.name, field: info.fieldName });
              return () => stop();
            },
          };
        },
      };
    },
  };
}

