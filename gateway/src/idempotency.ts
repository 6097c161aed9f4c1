import type { ApolloServerPlugin } from '@apollo/server';
import { isIdempotencyKey } from '@tributary/core/identity';
import { HttpRequestError } from '@tributary/core/server';
import { GraphQLError } from 'graphql';
import type { IncomingHttpHeaders } from 'node:http';
import type { GatewayContext } from './context.ts';

/** The request header of the IETF httpapi draft "The Idempotency-Key HTTP Header Field". */
export const IDEMPOTENCY_KEY_HEADER = 'idempotency-key';

const malformed = 'Idempotency-Key must be 1 to 255 printable ASCII characters';

/**
 * The `Idempotency-Key` of a multipart (file upload) request, checked as the plugin below checks
 * it: the files are staged with it, signed with the caller's identity. Undefined without one.
 * @throws HttpRequestError 400 BAD_REQUEST for a malformed key
 */
export function multipartIdempotencyKey(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[IDEMPOTENCY_KEY_HEADER];
  if (value === undefined) return undefined;
  if (!isIdempotencyKey(value)) throw new HttpRequestError(400, 'BAD_REQUEST', malformed);
  return value;
}

/**
 * Carries a mutation's `Idempotency-Key` header to the subgraphs: into the context, whose identity
 * the data sources sign with the key (so a subgraph knows whose key it is, and nobody can forge
 * another user's). The gateway knows no mutation's meaning: the subgraph that owns one keeps the
 * promise in its own transaction. A malformed key on a mutation is BAD_REQUEST (400); a key on a
 * query or subscription is ignored.
 */
export const idempotencyKeyPlugin: ApolloServerPlugin<GatewayContext> = {
  async requestDidStart() {
    return {
      async didResolveOperation({ operation, request, contextValue }) {
        if (operation?.operation !== 'mutation') return;
        const value = request.http?.headers.get(IDEMPOTENCY_KEY_HEADER);
        if (value === undefined || value === null) return;
        // HeaderMap joins repeated headers with ", "; a key is one value.
        if (!isIdempotencyKey(value)) throw new GraphQLError(malformed, { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });
        contextValue.idempotencyKey = value;
      },
    };
  },
};
