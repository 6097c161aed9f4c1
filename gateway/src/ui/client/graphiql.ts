/**
 * GraphiQL, bundled (no CDN): queries and mutations over HTTP, subscriptions over graphql-ws
 * with the `authorization` header of the headers editor sent as `connectionParams`.
 */
import 'graphiql/style.css';
import './graphiql.css';
import { createGraphiQLFetcher, type Fetcher, type FetcherOpts, type FetcherParams, type FetcherReturnType } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { getOperationAST, type DocumentNode } from 'graphql';
import { createClient, type Client, type FormattedExecutionResult, type SubscribePayload } from 'graphql-ws';
import { createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { initialToken, readConfig, socketError, webSocketUrl } from './common.ts';

const config = readConfig();

// Monaco runs its language services in web workers; the gateway serves them from the same bundle.
(globalThis as { MonacoEnvironment?: { getWorker(id: string, label: string): Worker } }).MonacoEnvironment = {
  getWorker: (_id, label) => new Worker(config.workers?.[label] ?? config.workers?.editor ?? ''),
};

function headerValue(headers: FetcherOpts['headers'], name: string): string | undefined {
  for (const [key, value] of Object.entries(headers ?? {})) if (key.toLowerCase() === name && typeof value === 'string') return value;
  return undefined;
}

function isSubscription(document: DocumentNode | undefined, operationName: string | null | undefined): boolean {
  return document !== undefined && getOperationAST(document, operationName ?? undefined)?.operation === 'subscription';
}

/**
 * One graphql-ws client per `authorization` value: the gateway checks the token once, in
 * connection_init, so a changed header needs a new connection.
 */
let socket: { authorization: string | undefined; client: Client } | undefined;
function socketFor(authorization: string | undefined): Client {
  if (!socket || socket.authorization !== authorization) {
    void socket?.client.dispose();
    socket = {
      authorization,
      client: createClient({ url: webSocketUrl(config.graphqlPath), connectionParams: authorization ? { authorization } : {}, retryAttempts: 0 }),
    };
  }
  return socket.client;
}

async function* subscribe(params: FetcherParams, opts: FetcherOpts | undefined): AsyncGenerator<FormattedExecutionResult> {
  const payload: SubscribePayload = { query: params.query, ...(params.operationName ? { operationName: params.operationName } : {}), ...(params.variables ? { variables: params.variables as Record<string, unknown> } : {}) };
  try {
    yield* socketFor(headerValue(opts?.headers, 'authorization')).iterate(payload);
  } catch (error) {
    // GraphiQL shows an Error's message; a CloseEvent would show as "{}".
    const { code, message } = socketError(error);
    throw new Error(`${code}: ${message}`);
  }
}

const token = initialToken(config);
const http = createGraphiQLFetcher({ url: config.graphqlPath });
const fetcher: Fetcher = (params, opts) => {
  // The toolkit types results with graphql-js' GraphQLError; over the wire they are formatted
  // errors (plain objects), which is all GraphiQL reads.
  if (isSubscription(opts?.documentAST, params.operationName)) return subscribe(params, opts) as AsyncIterable<unknown> as FetcherReturnType;
  // GraphiQL introspects on mount, before its (lazily loaded) headers editor exists, so with no
  // headers at all: use the token that editor starts with, or the schema never loads.
  if (!opts?.headers && token) return http(params, { ...opts, headers: { authorization: `Bearer ${token}` } });
  return http(params, opts);
};

// The gateway's embedder may give its own first query (pnpm dev does); this one fits any schema.
const defaultQuery =
  config.defaultQuery ??
  `# This gateway's GraphQL API: Ctrl-Enter runs it; the
# documentation explorer shows the schema.
# Headers carry the token:
#   {"authorization": "Bearer <token>"}
# Subscriptions go over graphql-ws with
# the same header as connectionParams.

query Ping {
  __typename
}
`;

const root = document.getElementById('graphiql');
if (!root) throw new Error('#graphiql is missing from the page');
createRoot(root).render(
  createElement(
    GraphiQL,
    {
      fetcher,
      defaultQuery,
      ...(token ? { initialHeaders: JSON.stringify({ authorization: `Bearer ${token}` }, null, 2), defaultEditorToolsVisibility: 'headers' as const } : {}),
    },
    createElement(GraphiQL.Logo, null, 'Tributary'),
  ),
);
