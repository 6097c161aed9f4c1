import type { ApolloServer } from '@apollo/server';
import type { Logger } from '@tributary/core';
import { createHttpHandler, HttpRequestError, type ExtraRoutes } from '@tributary/core/server';
import type { IncomingMessage, RequestListener } from 'node:http';
import type { GatewayConfig } from './config.ts';
import type { GatewayContext } from './context.ts';
import { multipartIdempotencyKey } from './idempotency.ts';
import type { FileUploads } from './uploads.ts';
import type { Ui } from './ui/server.ts';

export interface GatewayHttpOptions {
  config: GatewayConfig;
  apollo: ApolloServer<GatewayContext>;
  logger: Logger;
  /** The caller of a request, from its bearer token. @throws when it has none or a bad one */
  authenticate: (req: IncomingMessage) => Promise<GatewayContext>;
  uploads: FileUploads;
  ui: Ui;
  /** `/ready`: whether the broker and the supergraph are there. */
  ready: () => { broker: boolean; schema: boolean };
  /** The embedder's own routes, tried after the gateway's. */
  routes: ExtraRoutes | undefined;
}

/**
 * The gateway's HTTP side: GraphiQL for a browser's `GET /graphql`, else GraphQL over HTTP
 * (multipart uploads included), /health, /ready, /metrics, the files routes, GraphiQL's files
 * and the embedder's routes.
 */
export function gatewayHttpHandler(options: GatewayHttpOptions): RequestListener {
  const { config, uploads, ui, authenticate, routes } = options;
  const handle = createHttpHandler({
    service: 'gateway',
    apollo: options.apollo,
    logger: options.logger,
    maxBodyBytes: config.GATEWAY_MAX_BODY_BYTES,
    context: authenticate,
    multipart: multipartReader(uploads, authenticate),
    cors: config.CORS_ORIGINS,
    ready: async () => {
      const details = options.ready();
      return { ok: details.broker && details.schema, details };
    },
    extraRoutes: (req, res, url) => uploads.route(req, res, url, authenticate) || ui.routes(req, res, url) || (routes?.(req, res, url) ?? false),
  });
  return (req, res) => ui.graphiql(req, res) || handle(req, res);
}

/**
 * A multipart request (the GraphQL multipart request spec): its caller authenticated before a
 * byte of its files is read, then its files staged with the uploads subgraph.
 */
function multipartReader(uploads: FileUploads, authenticate: (req: IncomingMessage) => Promise<GatewayContext>) {
  return async (req: IncomingMessage): Promise<unknown> => {
    if (!uploads.enabled) {
      req.resume();
      throw new HttpRequestError(400, 'BAD_REQUEST', 'this gateway takes no file uploads (GATEWAY_UPLOADS_SUBGRAPH)');
    }
    let identity: GatewayContext;
    try {
      identity = await authenticate(req);
    } catch (error) {
      req.resume();
      throw new HttpRequestError(401, 'UNAUTHENTICATED', error instanceof Error ? error.message : 'unauthenticated');
    }
    let key: string | undefined;
    try {
      key = multipartIdempotencyKey(req.headers);
    } catch (error) {
      req.resume();
      throw error;
    }
    // The files are staged with the key too (signed with the identity); the mutation gets it from the plugin.
    return uploads.readMultipart(req, key !== undefined ? { ...identity, idempotencyKey: key } : identity);
  };
}
