import { HeaderMap, type ApolloServer, type BaseContext, type HTTPGraphQLResponse } from '@apollo/server';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { metrics, registry } from './metrics.ts';
import { SpanKind, withSpan } from './tracing.ts';
import { errorMessage } from './errors.ts';
import { retryAfterSeconds } from './apollo-plugins.ts';

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
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return sendJson(res, 400, { errors: [{ message: 'malformed request URL', extensions: { code: 'BAD_REQUEST' } }] });
    }
    if (applyCors(req, res, options.cors ?? [])) return;
    if (url.pathname === '/graphql') return serveGraphql(options, req, res, url);
    answerOtherRoute(options, req, res, url);
  };
}

/** `/health`, `/metrics`, `/ready`, then the extra routes; 404 for the rest. */
function answerOtherRoute<TContext extends BaseContext>(options: HttpHandlerOptions<TContext>, req: IncomingMessage, res: ServerResponse, url: URL): void {
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
  if (options.extraRoutes?.(req, res, url)) return;
  sendJson(res, 404, { errors: [{ message: 'not found', extensions: { code: 'NOT_FOUND' } }] });
}

/** `/graphql`, timed and in a span that continues the caller's trace. */
function serveGraphql<TContext extends BaseContext>(options: HttpHandlerOptions<TContext>, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const traceparent = req.headers.traceparent;
  const stopTimer = metrics.httpRequestDuration.startTimer({ service: options.service, route: '/graphql' });
  res.once('finish', () => stopTimer({ status: String(res.statusCode) }));
  void withSpan(`${options.service} ${req.method ?? 'GET'} /graphql`, SpanKind.SERVER, typeof traceparent === 'string' ? traceparent : undefined, { 'http.request.method': req.method ?? 'GET', 'tributary.service': options.service }, async () => {
    try {
      const headers = headerMapOf(req);
      const body = await readGraphqlBody(options, req, headers);
      const result = await options.apollo.executeHTTPGraphQLRequest({
        httpGraphQLRequest: { method: req.method ?? 'GET', headers, search: url.search, body },
        context: () => options.context(req),
      });
      await writeResult(res, result);
    } catch (error) {
      answerFailure(options.logger, res, error);
    }
  });
}

function headerMapOf(req: IncomingMessage): HeaderMap {
  const headers = new HeaderMap();
  for (const [key, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
  }
  return headers;
}

/**
 * The body Apollo executes: a multipart request as its reader makes it (then `headers` say JSON),
 * a POST's JSON (up to `maxBodyBytes`), or none (a GET). Refusals are {@link HttpRequestError}s.
 */
async function readGraphqlBody<TContext extends BaseContext>(options: HttpHandlerOptions<TContext>, req: IncomingMessage, headers: HeaderMap): Promise<unknown> {
  if (req.method === 'POST' && options.multipart && isMultipart(req)) {
    if (!PREFLIGHT_HEADERS.some((name) => typeof req.headers[name] === 'string' && req.headers[name] !== '')) {
      req.resume();
      throw new HttpRequestError(400, 'BAD_REQUEST', `a multipart request must carry one of the headers ${PREFLIGHT_HEADERS.join(', ')} (CSRF prevention)`);
    }
    const parsed = await options.multipart(req);
    // What Apollo executes is the JSON the reader made of it.
    headers.set('content-type', 'application/json');
    if (parsed !== undefined) return parsed;
  }
  const body = req.method === 'POST' ? await readBody(req, options.maxBodyBytes) : '';
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body);
  } catch {
    throw new HttpRequestError(400, 'BAD_REQUEST', 'request body is not valid JSON');
  }
}

async function writeResult(res: ServerResponse, result: HTTPGraphQLResponse): Promise<void> {
  for (const [key, value] of result.headers) res.setHeader(key, value);
  res.statusCode = result.status ?? 200;
  if (result.body.kind === 'complete') {
    res.end(result.body.string);
  } else {
    for await (const chunk of result.body.asyncIterator) res.write(chunk);
    res.end();
  }
}

/** A request refused (its status and errors, with Retry-After when they ask for a wait), too large (413), or failed (500). */
function answerFailure(logger: Logger, res: ServerResponse, error: unknown): void {
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

function isMultipart(req: IncomingMessage): boolean {
  return /^multipart\/form-data\s*(;|$)/i.test(req.headers['content-type'] ?? '');
}

