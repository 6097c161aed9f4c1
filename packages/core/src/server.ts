import { ApolloServer, HeaderMap, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import { ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { buildSubgraphSchema } from '@apollo/subgraph';
import type { GraphQLResolverMap } from '@apollo/subgraph/dist/schema-helper/resolverMap.js';
import type { DocumentNode, GraphQLFormattedError } from 'graphql';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { metrics, registry } from './metrics.ts';
import { SpanKind, withSpan } from './tracing.ts';
import type { Database } from './db/index.ts';
import type { EventConsumer } from './events/consumer.ts';
import type { OutboxRelay } from './events/relay.ts';
import type { Transport } from './events/transport.ts';
import { errorMessage, unavailableDependency } from './errors.ts';
import { API_ERROR_HTTP_STATUS, ApiErrorCode, serviceUnavailable } from './graphql.ts';
import { findUnstorableInput, unstorableInputError } from './input.ts';

export interface SubgraphOptions<TContext extends BaseContext> {
  name: string;
  typeDefs: DocumentNode;
  resolvers: GraphQLResolverMap<TContext>;
  db: Database;
  transport: Transport;
  logger: Logger;
  relay?: OutboxRelay;
  consumers?: EventConsumer[];
  /** Builds the per-request context; called with a fresh EntityManager fork. */
  context: (args: { req: IncomingMessage; db: Database }) => Promise<TContext>;
  /** Largest request body accepted, in bytes. Default 2 MiB. */
  maxBodyBytes?: number;
  /** Production mode: no introspection, no stack traces in errors. Default: NODE_ENV of the process. */
  production?: boolean;
  /** Close the transport on stop (false when it is shared with other services). Default true. */
  closeTransport?: boolean;
  /** Answers routes other than /graphql, /health, /ready and /metrics (return false to 404). */
  routes?: ExtraRoutes;
}

/** A handler for routes of its own: returns true when it answers the request. */
export type ExtraRoutes = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean;

/**
 * A request refused before it reaches execution: answered with `status` and
 * `{ errors }` (each error with its `extensions.code`). Thrown by a `multipart` reader.
 */
export class HttpRequestError extends Error {
  override name = 'HttpRequestError';
  readonly errors: { message: string; extensions: Record<string, unknown> }[];
  constructor(
    readonly status: number,
    code: string,
    message: string,
    extensions: Record<string, unknown> = {},
    errors?: { message: string; extensions: Record<string, unknown> }[],
  ) {
    super(message);
    this.errors = errors ?? [{ message, extensions: { code, ...extensions } }];
  }
}

/**
 * Headers of which a multipart request must carry one (Apollo Server's CSRF prevention): a
 * browser sends a `multipart/form-data` POST cross-origin without a preflight, but not one
 * with a header of its page's own choosing.
 */
export const PREFLIGHT_HEADERS = ['apollo-require-preflight', 'x-apollo-operation-name'] as const;

export interface Subgraph {
  readonly name: string;
  /** `http://host:port/graphql` once listening. */
  readonly url: string;
  listen(port?: number, host?: string): Promise<string>;
  /** Graceful: stop consuming, finish in-flight work, flush the relay, close server, broker, database. */
  stop(): Promise<void>;
}

class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new BodyTooLargeError(`request body exceeds ${limit} bytes`));
      req.resume(); // discard, so the client can read our answer
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Stop buffering but keep draining: destroying the socket would hide the 413.
        req.off('data', onData);
        req.resume();
        chunks.length = 0;
        reject(new BodyTooLargeError(`request body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export interface HttpHandlerOptions<TContext extends BaseContext> {
  /** Service name (metrics label, span names). */
  service: string;
  apollo: ApolloServer<TContext>;
  logger: Logger;
  context: (req: IncomingMessage) => Promise<TContext>;
  /** `/ready`: whether dependencies answer, with a detail per dependency. */
  ready: () => Promise<{ ok: boolean; details: Record<string, boolean> }>;
  maxBodyBytes: number;
  /** Answers routes other than /graphql, /health and /ready (return false to 404). */
  extraRoutes?: ExtraRoutes;
  /**
   * Reads a `multipart/form-data` POST to /graphql (the GraphQL multipart request spec) into
   * the JSON body to execute, e.g. with each file replaced by a reference to where it was
   * stored; throw {@link HttpRequestError} to refuse it. Called only for a request that carries
   * one of {@link PREFLIGHT_HEADERS} (else it is refused with 400), with no body limit: the
   * reader sets its own. Without it, multipart bodies are refused as not JSON.
   */
  multipart?: (req: IncomingMessage) => Promise<unknown>;
  /** Browser origins allowed (CORS); `*` allows any origin, never with credentials. Default none. */
  cors?: readonly string[];
}

/**
 * CORS headers for a request; answers preflights. Returns true when the request was a preflight.
 * A listed origin is echoed with credentials allowed; `*` is sent literally and without
 * credentials, since browsers must not send cookies or auth to a wildcard.
 */
function applyCors(req: IncomingMessage, res: ServerResponse, origins: readonly string[]): boolean {
  const origin = req.headers.origin;
  if (origins.length > 0 && typeof origin === 'string') {
    if (origins.includes('*')) {
      res.setHeader('access-control-allow-origin', '*');
    } else if (origins.includes(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-allow-credentials', 'true');
    }
    res.setHeader('vary', 'origin');
  }
  if (req.method !== 'OPTIONS') return false;
  res.setHeader('access-control-allow-methods', 'GET, POST, OPTIONS');
  res.setHeader('access-control-allow-headers', 'content-type, authorization, apollo-require-preflight, x-apollo-operation-name, traceparent, idempotency-key');
  res.setHeader('access-control-max-age', '600');
  res.statusCode = 204;
  res.end();
  return true;
}

/**
 * The HTTP side of a GraphQL service (subgraph or gateway): `/graphql` through Apollo Server's
 * `executeHTTPGraphQLRequest`, a body size limit, coded errors for malformed requests, a trace
 * context per request, `/health` and `/ready`.
 */
export function createHttpHandler<TContext extends BaseContext>(options: HttpHandlerOptions<TContext>): (req: IncomingMessage, res: ServerResponse) => void {
  const { apollo, logger } = options;
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return sendJson(res, 400, { errors: [{ message: 'malformed request URL', extensions: { code: 'BAD_REQUEST' } }] });
    }
    if (applyCors(req, res, options.cors ?? [])) return;
    if (url.pathname === '/health') return sendJson(res, 200, { status: 'ok' });
    if (url.pathname === '/metrics') {
      void registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        () => sendJson(res, 500, { errors: [{ message: 'metrics unavailable', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] }),
      );
      return;
    }
    if (url.pathname === '/ready') {
      void options.ready().then(
        ({ ok, details }) => sendJson(res, ok ? 200 : 503, { status: ok ? 'ready' : 'unavailable', ...details }),
        () => sendJson(res, 503, { status: 'unavailable' }),
      );
      return;
    }
    if (url.pathname !== '/graphql') {
      if (options.extraRoutes?.(req, res, url)) return;
      return sendJson(res, 404, { errors: [{ message: 'not found', extensions: { code: 'NOT_FOUND' } }] });
    }
    const traceparent = req.headers.traceparent;
    const stopTimer = metrics.httpRequestDuration.startTimer({ service: options.service, route: '/graphql' });
    res.once('finish', () => stopTimer({ status: String(res.statusCode) }));
    void withSpan(`${options.service} ${req.method ?? 'GET'} /graphql`, SpanKind.SERVER, typeof traceparent === 'string' ? traceparent : undefined, { 'http.request.method': req.method ?? 'GET', 'tributary.service': options.service }, async () => {
      try {
        const headers = new HeaderMap();
        for (const [key, value] of Object.entries(req.headers)) {
          if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
        }
        let parsed: unknown = undefined;
        if (req.method === 'POST' && options.multipart && isMultipart(req)) {
          if (!PREFLIGHT_HEADERS.some((name) => typeof req.headers[name] === 'string' && req.headers[name] !== '')) {
            req.resume();
            throw new HttpRequestError(400, 'BAD_REQUEST', `a multipart request must carry one of the headers ${PREFLIGHT_HEADERS.join(', ')} (CSRF prevention)`);
          }
          parsed = await options.multipart(req);
          // What Apollo executes is the JSON the reader made of it.
          headers.set('content-type', 'application/json');
        }
        const body = req.method === 'POST' && parsed === undefined ? await readBody(req, options.maxBodyBytes) : '';
        if (body.length > 0) {
          try {
            parsed = JSON.parse(body);
          } catch {
            return sendJson(res, 400, { errors: [{ message: 'request body is not valid JSON', extensions: { code: 'BAD_REQUEST' } }] });
          }
        }
        const result = await apollo.executeHTTPGraphQLRequest({
          httpGraphQLRequest: { method: req.method ?? 'GET', headers, search: url.search, body: parsed },
          context: () => options.context(req),
        });
        for (const [key, value] of result.headers) res.setHeader(key, value);
        res.statusCode = result.status ?? 200;
        if (result.body.kind === 'complete') {
          res.end(result.body.string);
        } else {
          for await (const chunk of result.body.asyncIterator) res.write(chunk);
          res.end();
        }
      } catch (error) {
        if (error instanceof HttpRequestError || (error as { name?: unknown } | null)?.name === 'HttpRequestError') {
          const refused = error as HttpRequestError;
          if (refused.status === 413) res.setHeader('connection', 'close');
          const wait = retryAfterSeconds(refused.errors);
          if (wait !== undefined) res.setHeader('retry-after', String(wait));
          return sendJson(res, refused.status, { errors: refused.errors });
        }
        if (error instanceof BodyTooLargeError) {
          res.setHeader('connection', 'close');
          return sendJson(res, 413, { errors: [{ message: error.message, extensions: { code: 'PAYLOAD_TOO_LARGE' } }] });
        }
        logger.error({ err: errorMessage(error) }, 'request failed');
        if (!res.headersSent) sendJson(res, 500, { errors: [{ message: 'internal error', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] });
        else res.end();
      }
    });
  };
}

function isMultipart(req: IncomingMessage): boolean {
  return /^multipart\/form-data\s*(;|$)/i.test(req.headers['content-type'] ?? '');
}

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
function resolverTimings(service: string): ApolloServerPlugin {
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

/**
 * Connections the kernel completes and queues for a server whose event loop is busy (capped by
 * `net.core.somaxconn`). Node's default, 511, drops new connections under a burst that a
 * saturated process takes seconds to accept: clients then fail to connect instead of waiting.
 */
export const LISTEN_BACKLOG = 4096;

/**
 * A federated subgraph service: Apollo Server 5 over `buildSubgraphSchema`, on a small node:http
 * server that also answers `/health` (process alive) and `/ready` (database and broker reachable).
 * It owns the lifecycle of the service's relay and consumers so shutdown happens in the right
 * order.
 */
export async function createSubgraph<TContext extends BaseContext>(options: SubgraphOptions<TContext>): Promise<Subgraph> {
  const { db, transport, logger } = options;
  const maxBody = options.maxBodyBytes ?? 2 * 1024 * 1024;
  const production = options.production ?? process.env.NODE_ENV === 'production';
  // Keep idle connections longer than any client we expect (the gateway keeps them 30 s), so the
  // client always closes first: a server closing a connection a client has just written a
  // request on makes that request fail with ECONNRESET (Node's default is 5 s, which a busy
  // gateway's event loop can overrun). Headers must be given longer than that.
  const http: Server = createServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000 });
  const apollo = new ApolloServer<TContext>({
    schema: buildSubgraphSchema({ typeDefs: options.typeDefs, resolvers: options.resolvers as GraphQLResolverMap<unknown> }),
    // We own shutdown (consumers, relay and connections stop in order); Apollo's own signal
    // handlers would race ours.
    stopOnTerminationSignals: false,
    introspection: !production,
    includeStacktraceInErrorResponses: !production,
    formatError: formatSubgraphError,
    // Inline traces are for Apollo Studio; we trace with our own context and logs.
    plugins: [ApolloServerPluginDrainHttpServer({ httpServer: http }), ApolloServerPluginInlineTraceDisabled(), resolverTimings(options.name), refuseUnstorableInput, retryAfterPlugin],
    logger: {
      debug: (m: unknown) => logger.debug(String(m)),
      info: (m: unknown) => logger.info(String(m)),
      warn: (m: unknown) => logger.warn(String(m)),
      error: (m: unknown) => logger.error(String(m)),
    },
  });
  await apollo.start();
  if (options.closeTransport !== false) await transport.start();
  await options.relay?.start();
  for (const consumer of options.consumers ?? []) await consumer.start();

  http.on(
    'request',
    createHttpHandler({
      service: options.name,
      apollo,
      logger,
      maxBodyBytes: maxBody,
      context: (req) => options.context({ req, db }),
      ...(options.routes ? { extraRoutes: options.routes } : {}),
      ready: async () => {
        const database = await db.ping();
        const broker = transport.isReady();
        return { ok: database && broker, details: { database, broker } };
      },
    }),
  );

  let url = '';
  let stopped = false;
  return {
    name: options.name,
    get url() {
      return url;
    },
    listen: async (port = 0, host = '127.0.0.1') => {
      await new Promise<void>((resolve, reject) => {
        http.once('error', reject);
        http.listen({ port, host, backlog: LISTEN_BACKLOG }, () => resolve());
      });
      const address = http.address() as AddressInfo;
      url = `http://${host}:${address.port}/graphql`;
      logger.info({ url }, `${options.name} subgraph listening`);
      return url;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // Order matters: no new events in, in-flight handlers finish (their events hit the
      // outbox), the relay publishes what is committed, then connections close.
      for (const consumer of options.consumers ?? []) await consumer.stop();
      await apollo.stop();
      if (options.relay) {
        await options.relay.stop();
        await options.relay.flush().catch((error) => logger.warn({ err: errorMessage(error) }, 'relay flush at shutdown failed; rows stay for the next start'));
      }
      if (options.closeTransport !== false) await transport.close();
      await db.close();
    },
  };
}
