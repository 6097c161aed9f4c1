import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FaultRules, type Endpoint, type Fault } from './faults.ts';
import { chatReply, embeddingsReply, errorBody, type Json } from './replies.ts';

export type { Endpoint, Fault } from './faults.ts';

/** A request as the server saw it, and what it answered. */
export interface LoggedRequest {
  endpoint: Endpoint | 'other';
  method: string;
  path: string;
  authorization: string | undefined;
  /** The parsed JSON body (`undefined` when it was not JSON). */
  body: any;
  /** The fault played, if any. */
  fault: Fault['type'] | undefined;
  /** The status sent (0 when the connection was dropped or the client left first). */
  status: number;
  /** When the whole request had been read, ms since the epoch. */
  receivedAt: number;
  /** When the answer was written, ms since the epoch (0 when none was). */
  answeredAt: number;
}

export interface OpenAITestServer {
  /** The API root to give the SDK as `baseURL`, e.g. `http://127.0.0.1:40123/v1`. */
  readonly baseURL: string;
  /** Every request, in arrival order. */
  readonly requests: LoggedRequest[];
  /**
   * Plays `fault` on the next `times` requests (default 1; `Infinity` for always) to `endpoint`
   * (default: either). Rules are used in the order added; a used-up rule is dropped.
   */
  inject(fault: Fault, options?: { times?: number; endpoint?: Endpoint }): void;
  /** Drops every rule not yet used up. */
  clearFaults(): void;
  /** Chat completions being answered now, the most at once so far, and those refused by `maxConcurrent`. */
  chatStats(): { inFlight: number; maxInFlight: number; refused: number };
  /** Starts `maxInFlight` and `refused` over (e.g. after a warm-up). */
  resetChatStats(): void;
  close(): Promise<void>;
}

export interface OpenAITestServerOptions {
  /** When set, requests must carry `Authorization: Bearer <apiKey>` or get a 401. */
  apiKey?: string;
  /** Embedding length when a request names no `dimensions`. Default 256. */
  dimensions?: number;
  /** Every chat completion is answered this late, ms (a model's think time). Default 0. */
  latencyMs?: number;
  /**
   * At most this many chat completions in progress at once; one more is refused at once with a
   * 429 and `Retry-After: 1`, as a provider's concurrency limit does. Default: no limit.
   */
  maxConcurrent?: number;
}

type ChatStats = { inFlight: number; maxInFlight: number; refused: number };
/** Sends a reply and records it in the request's log entry (nothing when the client has gone). */
type Replier = (status: number, payload: Json, headers?: Record<string, string>) => void;

/** What the server's requests share: its settings, its log, its faults and its chat counters. */
class TestServerState {
  readonly requests: LoggedRequest[] = [];
  readonly faults = new FaultRules();
  readonly chats: ChatStats = { inFlight: 0, maxInFlight: 0, refused: 0 };
  private completions = 0;

  constructor(readonly options: OpenAITestServerOptions) {}

  /** Numbers the chat completions (their ids). */
  readonly nextCompletion = () => ++this.completions;
}

/**
 * A local OpenAI-compatible server for tests: `POST /v1/chat/completions` (with
 * `response_format: json_schema`, answered deterministically by the offline analyzer, `usage`
 * from text length) and `POST /v1/embeddings` (offline hashed vectors, float or base64), on
 * 127.0.0.1 at a random port, with programmable faults and a request log. Speak to it with the
 * real `openai` SDK over real HTTP.
 */
export async function startOpenAITestServer(options: OpenAITestServerOptions = {}): Promise<OpenAITestServer> {
  const state = new TestServerState(options);
  const server = createServer((req, res) => {
    void handle(state, req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, errorBody(String(error), 'server_error'));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return testServer(`http://127.0.0.1:${port}/v1`, server, state);
}

/** The handle tests hold. */
function testServer(baseURL: string, server: Server, state: TestServerState): OpenAITestServer {
  const { chats } = state;
  return {
    baseURL,
    requests: state.requests,
    inject(fault, injectOptions = {}) {
      state.faults.add(fault, injectOptions.times ?? 1, injectOptions.endpoint);
    },
    clearFaults() {
      state.faults.clear();
    },
    chatStats: () => ({ ...chats }),
    resetChatStats() {
      chats.maxInFlight = chats.inFlight;
      chats.refused = 0;
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}

/** One request: logged, checked (route, key, JSON, the concurrency limit), then answered; a chat completion counted while in progress. */
async function handle(state: TestServerState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { options, chats } = state;
  const entry = await logRequest(state, req);
  const reply: Replier = (status, payload, headers = {}) => {
    if (res.destroyed) return;
    entry.status = status;
    send(res, status, payload, headers);
    entry.answeredAt = Date.now();
  };
  const { endpoint, body } = entry;
  if (endpoint === 'other' || req.method !== 'POST') return reply(404, errorBody(`Unknown route ${req.method} ${entry.path}`, 'invalid_request_error'));
  if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
    return reply(401, errorBody('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
  }
  if (typeof body !== 'object' || body === null) return reply(400, errorBody('The body is not valid JSON.', 'invalid_request_error'));

  if (endpoint === 'chat' && options.maxConcurrent !== undefined && chats.inFlight >= options.maxConcurrent) {
    chats.refused += 1;
    return reply(429, errorBody(`Concurrency limit of ${options.maxConcurrent} requests reached.`, 'requests', 'rate_limit_exceeded'), { 'retry-after': '1' });
  }
  if (endpoint !== 'chat') return answer(state, req, res, entry, endpoint, body, reply);
  chats.inFlight += 1;
  chats.maxInFlight = Math.max(chats.maxInFlight, chats.inFlight);
  try {
    if (options.latencyMs) await waitUnlessGone(res, options.latencyMs);
    if (res.destroyed || res.writableEnded) return;
    await answer(state, req, res, entry, endpoint, body, reply);
  } finally {
    chats.inFlight -= 1;
  }
}

/** Reads the whole request and adds it to the log. */
async function logRequest(state: TestServerState, req: IncomingMessage): Promise<LoggedRequest> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  const endpoint: LoggedRequest['endpoint'] = path === '/v1/chat/completions' ? 'chat' : path === '/v1/embeddings' ? 'embeddings' : 'other';
  const raw = await readBody(req);
  let body: any;
  try {
    body = JSON.parse(raw);
  } catch {
    body = undefined;
  }
  const entry: LoggedRequest = {
    endpoint,
    method: req.method ?? 'GET',
    path,
    authorization: req.headers.authorization,
    body,
    fault: undefined,
    status: 0,
    receivedAt: Date.now(),
    answeredAt: 0,
  };
  state.requests.push(entry);
  return entry;
}

/** Plays the next fault for the endpoint, if any, then (unless it was a drop or an error status) the normal reply. */
async function answer(state: TestServerState, req: IncomingMessage, res: ServerResponse, entry: LoggedRequest, endpoint: Endpoint, body: Json, reply: Replier): Promise<void> {
  const fault = state.faults.take(endpoint);
  entry.fault = fault?.type;
  if (fault?.type === 'disconnect') {
    req.socket.destroy();
    return;
  }
  if (fault?.type === 'status') {
    const headers: Record<string, string> = fault.retryAfter !== undefined ? { 'retry-after': fault.retryAfter } : {};
    const type = fault.status === 429 ? 'requests' : fault.status >= 500 ? 'server_error' : 'invalid_request_error';
    return reply(fault.status, errorBody(fault.message ?? `Injected ${fault.status}`, type, fault.status === 429 ? 'rate_limit_exceeded' : null), headers);
  }
  if (fault?.type === 'delay') {
    await waitUnlessGone(res, fault.ms);
    if (res.destroyed || res.writableEnded) return;
  }
  const result = endpoint === 'chat' ? chatReply(body, fault, state.nextCompletion) : embeddingsReply(body, state.options.dimensions ?? 256);
  reply(result.status, result.body);
}

/** Wait `ms`, or less if the client leaves first (it timed out: there is no one to answer). */
function waitUnlessGone(res: ServerResponse, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    res.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, payload: Json, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-request-id': `req_${Date.now()}`, ...headers });
  res.end(text);
}
