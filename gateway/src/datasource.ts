import { RemoteGraphQLDataSource, type GraphQLDataSourceProcessOptions } from '@apollo/gateway';
import { STATUS_CODES } from 'node:http';
import { Agent, type Dispatcher } from 'undici';

// The fetcher and response types of the @apollo/utils.fetcher version @apollo/gateway uses.
type Fetcher = RemoteGraphQLDataSource['fetcher'];
type FetcherRequestInit = NonNullable<Parameters<Fetcher>[1]>;
type FetcherResponse = Awaited<ReturnType<Fetcher>>;
type FetcherHeaders = FetcherResponse['headers'];
/** One subgraph request, as Apollo Gateway hands it to a data source. */
export type SubgraphRequest = GraphQLDataSourceProcessOptions['request'];
/** One subgraph response, as a data source returns it to Apollo Gateway. */
export type SubgraphResponse = Awaited<ReturnType<RemoteGraphQLDataSource['process']>>;
type SubgraphError = NonNullable<SubgraphResponse['errors']>[number];

export interface UndiciFetcherOptions {
  /**
   * The undici dispatcher requests go through (an `Agent`, a `Pool` for one origin, a mock).
   * Default: a new `Agent` with keep-alive, closed by the fetcher's `close()`.
   */
  dispatcher?: Dispatcher;
  /** Connections per subgraph origin, when the fetcher makes its own Agent. Default: no limit, as Apollo's default fetcher. */
  connections?: number;
  /**
   * How long an idle keep-alive connection is kept, ms, when the fetcher makes its own Agent: a
   * shorter `Keep-Alive: timeout` from the server wins, a longer one does not. Default 30 000,
   * well under the subgraphs' 65 s, so the gateway always closes an idle connection first.
   */
  keepAliveTimeout?: number;
  /** Time to wait for response headers, and between body chunks, ms. Default 60 000 each. */
  headersTimeout?: number;
  bodyTimeout?: number;
}

/** A `fetcher` for `RemoteGraphQLDataSource`, plus the means to close its connections. */
export type UndiciFetcher = Fetcher & { readonly dispatcher: Dispatcher; close(): Promise<void> };

/**
 * A fetcher over undici's `request` API with keep-alive connection pools, in place of
 * Apollo's default make-fetch-happen stack (whose agents, `Request` objects and stream
 * plumbing cost more CPU per subgraph call than the subgraph call itself on loopback).
 * undici honours the subgraph's `Keep-Alive: timeout` hint, so it does not reuse a
 * connection the subgraph is closing; the default stack does, and fails such calls with
 * ECONNRESET after bursts (Apollo never retries them).
 * The whole body is read before the response is returned: subgraph answers are parsed
 * whole anyway, and a buffered response can be cloned.
 */
export function createUndiciFetcher(options: UndiciFetcherOptions = {}): UndiciFetcher {
  const own = options.dispatcher === undefined;
  const dispatcher =
    options.dispatcher ??
    new Agent({
      keepAliveTimeout: options.keepAliveTimeout ?? 30_000,
      // The server's hint is taken up to this: a request written on a connection the server is
      // closing at that moment fails with ECONNRESET, and a POST is never retried. Closing well
      // before the server does leaves a margin that a blocked event loop (seconds, under
      // overload or in one process with PGlite) cannot eat.
      keepAliveMaxTimeout: options.keepAliveTimeout ?? 30_000,
      ...(options.connections !== undefined ? { connections: options.connections } : {}),
    });
  const headersTimeout = options.headersTimeout ?? 60_000;
  const bodyTimeout = options.bodyTimeout ?? 60_000;
  // A data source calls one URL: remember how the last one splits.
  let lastUrl = '';
  let origin = '';
  let path = '';
  const fetcher = async (url: string, init: FetcherRequestInit = {}): Promise<FetcherResponse> => {
    if (url !== lastUrl) {
      const parsed = new URL(url);
      origin = parsed.origin;
      path = `${parsed.pathname}${parsed.search}`;
      lastUrl = url;
    }
    const response = await dispatcher.request({
      origin,
      path,
      method: (init.method ?? 'GET') as Dispatcher.HttpMethod,
      headers: init.headers ?? null,
      body: init.body ?? null,
      headersTimeout,
      bodyTimeout,
      ...(init.signal ? { signal: init.signal as AbortSignal } : {}),
    });
    const text = await response.body.text();
    return new BufferedResponse(url, response.statusCode, new ResponseHeaders(response.headers), text);
  };
  return Object.assign(fetcher, {
    dispatcher,
    close: async () => {
      if (own) await dispatcher.close();
    },
  });
}

class ResponseHeaders implements FetcherHeaders {
  private readonly map = new Map<string, string>();

  constructor(raw: Record<string, string | string[] | undefined>) {
    for (const name in raw) {
      const value = raw[name];
      if (value !== undefined) this.map.set(name.toLowerCase(), Array.isArray(value) ? value.join(', ') : value);
    }
  }

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    const known = this.map.get(key);
    this.map.set(key, known === undefined ? value : `${known}, ${value}`);
  }
  delete(name: string): void {
    this.map.delete(name.toLowerCase());
  }
  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }
  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }
  set(name: string, value: string): void {
    this.map.set(name.toLowerCase(), value);
  }
  entries(): IterableIterator<[string, string]> {
    return this.map.entries();
  }
  keys(): IterableIterator<string> {
    return this.map.keys();
  }
  values(): IterableIterator<string> {
    return this.map.values();
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.map.entries();
  }
  clone(): ResponseHeaders {
    return new ResponseHeaders(Object.fromEntries(this.map));
  }
}

class BufferedResponse implements FetcherResponse {
  readonly redirected = false;
  readonly ok: boolean;
  readonly statusText: string;
  bodyUsed = false;

  constructor(
    readonly url: string,
    readonly status: number,
    readonly headers: ResponseHeaders,
    private readonly body: string,
  ) {
    this.ok = status >= 200 && status < 300;
    this.statusText = STATUS_CODES[status] ?? '';
  }

  private consume(): string {
    if (this.bodyUsed) throw new TypeError('Body is unusable: Body has already been read');
    this.bodyUsed = true;
    return this.body;
  }
  async text(): Promise<string> {
    return this.consume();
  }
  async json(): Promise<any> {
    return JSON.parse(this.consume());
  }
  async arrayBuffer(): Promise<ArrayBuffer> {
    const bytes = Buffer.from(this.consume());
    return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  }
  clone(): BufferedResponse {
    if (this.bodyUsed) throw new TypeError('Response.clone: Body has already been consumed');
    return new BufferedResponse(this.url, this.status, this.headers.clone(), this.body);
  }
}

/** An `_entities` request reduced to distinct representations, and the way back. */
export interface EntityBatch {
  /** The request to send: the same operation, each distinct representation once. */
  readonly request: SubgraphRequest;
  /** Representations the gateway asked for. */
  readonly original: number;
  /** Distinct representations sent. */
  readonly distinct: number;
  /**
   * The subgraph's answer in the shape the gateway expects: `_entities[i]` for every original
   * position `i` (a copy where a representation repeats, since the gateway merges later data
   * into each entity object), and each error whose path names an entity once per position it
   * stands for, with that position in its path.
   */
  expand(response: SubgraphResponse): SubgraphResponse;
}

const ENTITIES = '_entities';

/**
 * Apollo Gateway sends one representation per entity occurrence in the result (the nested
 * benchmark query sends hundreds, a few dozen of them distinct). Returns the request with
 * each distinct representation once, or `undefined` when there is nothing to remove (not an
 * entity fetch, or no duplicates). Representations are compared by their JSON text: the
 * gateway builds them field by field in selection order, so equal ones serialise equally.
 */
export function deduplicateRepresentations(request: SubgraphRequest): EntityBatch | undefined {
  const representations: unknown = request.variables?.representations;
  if (!Array.isArray(representations) || representations.length < 2 || !request.query?.includes(ENTITIES)) return undefined;
  const positionOf = new Map<string, number>();
  const distinct: unknown[] = [];
  const index = new Array<number>(representations.length);
  for (let i = 0; i < representations.length; i++) {
    const representation: unknown = representations[i];
    const key = JSON.stringify(representation);
    let j = positionOf.get(key);
    if (j === undefined) {
      j = distinct.length;
      positionOf.set(key, j);
      distinct.push(representation);
    }
    index[i] = j;
  }
  if (distinct.length === representations.length) return undefined;
  return {
    request: { ...request, variables: { ...request.variables, representations: distinct } },
    original: representations.length,
    distinct: distinct.length,
    expand: (response) => expandEntities(response, index, distinct.length),
  };
}

function expandEntities(response: SubgraphResponse, index: number[], distinct: number): SubgraphResponse {
  const data = response.data as Record<string, unknown> | null | undefined;
  const entities = data?.[ENTITIES];
  // A subgraph that answered with the wrong number of entities: leave it for the gateway to report.
  if (Array.isArray(entities) && entities.length !== distinct) return response;
  const out: SubgraphResponse = { ...response };
  if (Array.isArray(entities)) {
    const expanded = new Array<unknown>(index.length);
    const used = new Uint8Array(distinct);
    for (let i = 0; i < index.length; i++) {
      const j = index[i]!;
      if (used[j] === 0) {
        used[j] = 1;
        expanded[i] = entities[j];
      } else expanded[i] = cloneJson(entities[j]);
    }
    out.data = { ...data, [ENTITIES]: expanded };
  }
  // Errors are remapped even without data (a non-null violation can null the whole answer).
  if (response.errors?.length) out.errors = expandErrors(response.errors, index, distinct);
  return out;
}

function expandErrors(errors: readonly SubgraphError[], index: number[], distinct: number): SubgraphError[] {
  const positions: number[][] = Array.from({ length: distinct }, () => []);
  for (let i = 0; i < index.length; i++) positions[index[i]!]!.push(i);
  const out: SubgraphError[] = [];
  for (const error of errors) {
    const path = error.path;
    const j = path?.[1];
    if (!path || path[0] !== ENTITIES || typeof j !== 'number' || !positions[j]) {
      out.push(error);
      continue;
    }
    for (const i of positions[j]) out.push({ ...error, path: [ENTITIES, i, ...path.slice(2)] });
  }
  return out;
}

/** A deep copy of parsed JSON (objects, arrays, primitives): much cheaper than structuredClone. */
function cloneJson(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    const copy = new Array<unknown>(value.length);
    for (let i = 0; i < value.length; i++) copy[i] = cloneJson(value[i]);
    return copy;
  }
  const copy: Record<string, unknown> = {};
  for (const key in value) copy[key] = cloneJson((value as Record<string, unknown>)[key]);
  return copy;
}

/**
 * The GraphQL response a subgraph sent with a status other than 2xx (a 400 BAD_USER_INPUT, a 503
 * SERVICE_UNAVAILABLE), from the error `RemoteGraphQLDataSource` makes of it: Apollo reports any
 * such answer as one error, `<status>: <text>`, with no code (so INTERNAL_SERVER_ERROR to the
 * client), where the subgraph's own errors, each with its code, say what happened. Undefined when
 * the body is no GraphQL response whose every error has a code (an HTML error page, a proxy's
 * text, bare messages): Apollo's error stands, with the code it gives a 401 or a 403.
 */
export function graphqlAnswerOf(error: unknown): SubgraphResponse | undefined {
  const response = (error as { extensions?: { response?: { status?: unknown; body?: unknown } } } | null)?.extensions?.response;
  const body = response?.body;
  if (typeof response?.status !== 'number' || typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const { errors, data, extensions } = body as { errors?: unknown; data?: unknown; extensions?: unknown };
  if (!Array.isArray(errors) || errors.length === 0) return undefined;
  const coded = (e: unknown) => typeof (e as { message?: unknown } | null)?.message === 'string' && typeof (e as { extensions?: { code?: unknown } }).extensions?.code === 'string';
  if (!errors.every(coded)) return undefined;
  return {
    errors: errors as NonNullable<SubgraphResponse['errors']>,
    ...(data !== undefined ? { data: data as NonNullable<SubgraphResponse['data']> | null } : {}),
    ...(typeof extensions === 'object' && extensions !== null ? { extensions: extensions as Record<string, unknown> } : {}),
  };
}

export interface FastDataSourceOptions {
  /** The subgraph's GraphQL endpoint. */
  url: string;
  /** How requests are sent. Default: `createUndiciFetcher()`, one keep-alive Agent per data source, closed by `close()`. */
  fetcher?: Fetcher;
  /** Send each distinct entity representation once per `_entities` request. Default true. */
  deduplicate?: boolean;
}

/**
 * `RemoteGraphQLDataSource` with keep-alive undici connection pools and de-duplicated entity
 * representations, and a subgraph's GraphQL errors passed on with their codes whatever its HTTP
 * status ({@link graphqlAnswerOf}); everything else (headers from `willSendRequest`,
 * `didReceiveResponse`, cache-control hints) is Apollo's. Extend it as you would
 * `RemoteGraphQLDataSource`; a subclass that overrides `process` calls `super.process`.
 *
 * @example
 * new ApolloGateway({ supergraphSdl, buildService: ({ url }) => new FastDataSource({ url: url! }) })
 */
export class FastDataSource<TContext extends Record<string, any> = Record<string, any>> extends RemoteGraphQLDataSource<TContext> {
  private readonly deduplicate: boolean;
  private readonly ownFetcher: UndiciFetcher | undefined;

  constructor(options: FastDataSourceOptions) {
    const ownFetcher = options.fetcher ? undefined : createUndiciFetcher();
    super({ url: options.url, fetcher: options.fetcher ?? ownFetcher! });
    this.ownFetcher = ownFetcher;
    this.deduplicate = options.deduplicate ?? true;
  }

  override async process(options: GraphQLDataSourceProcessOptions<TContext>): Promise<SubgraphResponse> {
    const batch = this.deduplicate ? deduplicateRepresentations(options.request) : undefined;
    if (!batch) return this.send(options);
    return batch.expand(await this.send({ ...options, request: batch.request } as GraphQLDataSourceProcessOptions<TContext>));
  }

  private async send(options: GraphQLDataSourceProcessOptions<TContext>): Promise<SubgraphResponse> {
    try {
      return await super.process(options);
    } catch (error) {
      const answer = graphqlAnswerOf(error);
      if (answer) return answer;
      throw error;
    }
  }

  /** Close the connections of the fetcher this data source made (not of one passed in). */
  async close(): Promise<void> {
    await this.ownFetcher?.close();
  }
}
