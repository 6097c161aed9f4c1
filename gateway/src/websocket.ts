import type { GraphQLSchema } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { Server } from 'node:http';
import { WebSocketServer } from 'ws';
import { bearerToken, type Authenticator, type Principal } from './auth.ts';
import { contextFor, type GatewayContext } from './context.ts';
import { closeTooSlow } from './slow-subscribers.ts';
import type { EventSubscriptions, QueryExecutor } from './subscriptions.ts';

export interface WebSocketOptions {
  /** The API schema being served; undefined until the supergraph is loaded. */
  schema: () => GraphQLSchema | undefined;
  authenticator: Authenticator;
  subscriptions: EventSubscriptions;
  execute: QueryExecutor;
}

/**
 * graphql-ws on the server's `/graphql`: a connection is authenticated once, in
 * connection_init, and ends when its token expires; subscriptions are the supergraph's event
 * subscriptions, other operations run through Apollo.
 */
export function serveWebSockets(http: Server, options: WebSocketOptions): { close(): Promise<void> } {
  const { authenticator, subscriptions, execute } = options;
  const wss = new WebSocketServer({ server: http, path: '/graphql' });
  const server = useServer<Record<string, unknown> | undefined, { principal?: Principal; expiry?: NodeJS.Timeout }>(
    {
      schema: () => {
        const schema = options.schema();
        if (!schema) throw new Error('the supergraph is not loaded');
        return schema;
      },
      // Authenticate once, in connection_init: returning false closes with 4403 Forbidden.
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const token = bearerToken(params.authorization ?? params.Authorization) ?? (typeof params.token === 'string' ? params.token : null) ?? bearerToken(ctx.extra.request.headers.authorization);
        try {
          const principal = await authenticator.verify(token);
          ctx.extra.principal = principal;
          if (principal.expiresAt !== null) {
            // An expired token ends the connection, and with it every subscription on it.
            const socket = ctx.extra.socket;
            ctx.extra.expiry = setTimeout(() => socket.close(4403, 'Forbidden: token expired'), Math.max(0, principal.expiresAt - Date.now()));
            ctx.extra.expiry.unref();
          }
          return true;
        } catch {
          return false;
        }
      },
      onClose: (ctx) => clearTimeout(ctx.extra.expiry),
      // Each subscribe's own context: its cursor, if it resumes, and how to close a subscriber too far behind.
      context: (ctx, _id, payload) => ({
        ...contextFor(ctx.extra.principal!),
        subscription: { after: payload.extensions?.after, tooSlow: () => closeTooSlow(ctx.extra.socket) },
      }),
      subscribe: (args) => subscriptions.subscribe(args),
      execute: (args) => execute(args.document, (args.variableValues ?? undefined) as Record<string, unknown> | undefined, args.contextValue as GatewayContext),
    },
    wss,
  );
  return {
    close: async () => {
      await server.dispose();
      wss.close();
    },
  };
}
