import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { OfflineEmbedder } from '../embeddings.ts';
import { analyzeOffline } from '../offline/analyzer.ts';

/** A fault the server plays instead of (or before) its normal reply. */
export type Fault =
  /** An error status with OpenAI's error body; `retryAfter` becomes the `Retry-After` header. */
  | { type: 'status'; status: number; retryAfter?: string; message?: string }
  /** The normal reply, `ms` late. */
  | { type: 'delay'; ms: number }
  /** A 200 whose message content is not JSON. */
  | { type: 'invalid-json' }
  /** A 200 whose content is JSON that breaks the analysis schema. */
  | { type: 'schema-violation' }
  /** The connection is destroyed without a reply. */
  | { type: 'disconnect' };

export type Endpoint = 'chat' | 'embeddings';

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

interface Rule {
  fault: Fault;
  remaining: number;
  endpoint: Endpoint | undefined;
}

type Json = Record<string, any>;

const tokensOf = (text: string) => Math.ceil(text.length / 4);

/**
 * A local OpenAI-compatible server for tests: `POST /v1/chat/completions` (with
 * `response_format: json_schema`, answered deterministically by the offline analyzer, `usage`
 * from text length) and `POST /v1/embeddings` (offline hashed vectors, float or base64), on
 * 127.0.0.1 at a random port, with programmable faults and a request log. Speak to it with the
 * real `openai` SDK over real HTTP.
 */
export async function startOpenAITestServer(options: OpenAITestServerOptions = {}): Promise<OpenAITestServer> {
  const requests: LoggedRequest[] = [];
  let rules: Rule[] = [];
  let counter = 0;
  const chats = { inFlight: 0, maxInFlight: 0, refused: 0 };

  const takeFault = (endpoint: Endpoint): Fault | undefined => {
    const rule = rules.find((r) => r.endpoint === undefined || r.endpoint === endpoint);
    if (!rule) return undefined;
    rule.remaining -= 1;
    if (rule.remaining <= 0) rules = rules.filter((r) => r !== rule);
    return rule.fault;
  };

  const server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, errorBody(String(error), 'server_error'));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const endpoint: LoggedRequest['endpoint'] =
      path === '/v1/chat/completions' ? 'chat' : path === '/v1/embeddings' ? 'embeddings' : 'other';
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
    requests.push(entry);
    const reply = (status: number, payload: Json, headers: Record<string, string> = {}) => {
      if (res.destroyed) return;
      entry.status = status;
      send(res, status, payload, headers);
      entry.answeredAt = Date.now();
    };

    if (endpoint === 'other' || req.method !== 'POST') return reply(404, errorBody(`Unknown route ${req.method} ${path}`, 'invalid_request_error'));
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return reply(401, errorBody('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
    }
    if (typeof body !== 'object' || body === null) return reply(400, errorBody('The body is not valid JSON.', 'invalid_request_error'));

    if (endpoint === 'chat' && options.maxConcurrent !== undefined && chats.inFlight >= options.maxConcurrent) {
      chats.refused += 1;
      return reply(429, errorBody(`Concurrency limit of ${options.maxConcurrent} requests reached.`, 'requests', 'rate_limit_exceeded'), { 'retry-after': '1' });
    }
    if (endpoint !== 'chat') return answer(req, res, entry, endpoint, body, reply);
    chats.inFlight += 1;
    chats.maxInFlight = Math.max(chats.maxInFlight, chats.inFlight);
    try {
      if (options.latencyMs) await waitUnlessGone(res, options.latencyMs);
      if (res.destroyed || res.writableEnded) return;
      await answer(req, res, entry, endpoint, body, reply);
    } finally {
      chats.inFlight -= 1;
    }
  }

  async function answer(req: IncomingMessage, res: ServerResponse, entry: LoggedRequest, endpoint: Endpoint, body: Json, reply: (status: number, payload: Json, headers?: Record<string, string>) => void): Promise<void> {
    const fault = takeFault(endpoint);
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

    const result = endpoint === 'chat' ? chat(body, fault) : embeddings(body);
    reply(result.status, result.body);
  }

  function chat(body: Json, fault: Fault | undefined): { status: number; body: Json } {
    if (typeof body.model !== 'string' || !Array.isArray(body.messages) || body.messages.length === 0) {
      return { status: 400, body: errorBody('model and messages are required.', 'invalid_request_error') };
    }
    const format = body.response_format;
    if (format?.type === 'json_schema') {
      const problem = format.json_schema?.name ? (format.json_schema.strict ? strictSchemaProblem(format.json_schema.schema, '#') : undefined) : 'json_schema.name is required';
      if (problem) return { status: 400, body: errorBody(`Invalid schema for response_format: ${problem}`, 'invalid_request_error', 'invalid_json_schema') };
    }
    const texts: string[] = body.messages.map((m: Json) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? '')));
    const user = [...body.messages].reverse().find((m: Json) => m.role === 'user');
    const text = String(user?.content ?? '').replace(/<\/?[a-z_]+>/gi, ' ');

    let content: string;
    if (fault?.type === 'invalid-json') content = '{"summary": "this reply stops in the middle of a stri';
    else if (fault?.type === 'schema-violation') content = JSON.stringify({ summary: '', themes: 'none', keywords: [], sentiment: { label: 'HAPPY', score: 7 } });
    else content = JSON.stringify(text.trim() ? analyzeOffline({ text }) : { summary: '-', themes: [], keywords: [], sentiment: { label: 'NEUTRAL', score: 0 } });

    let finishReason = 'stop';
    const cap = body.max_completion_tokens ?? body.max_tokens;
    if (typeof cap === 'number' && tokensOf(content) > cap) {
      content = content.slice(0, cap * 4);
      finishReason = 'length';
    }
    const prompt = texts.reduce((sum, t) => sum + tokensOf(t), 0);
    const completion = tokensOf(content);
    counter += 1;
    return {
      status: 200,
      body: {
        id: `chatcmpl-test${counter}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finishReason }],
        usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
      },
    };
  }

  function embeddings(body: Json): { status: number; body: Json } {
    const input: unknown[] = typeof body.input === 'string' ? [body.input] : Array.isArray(body.input) ? body.input : [];
    if (typeof body.model !== 'string' || input.length === 0 || !input.every((t) => typeof t === 'string')) {
      return { status: 400, body: errorBody('model and input (a string or strings) are required.', 'invalid_request_error') };
    }
    const texts = input as string[];
    if (texts.some((t) => t.trim() === '')) return { status: 400, body: errorBody("'$.input' is invalid: empty string.", 'invalid_request_error') };
    const embedder = new OfflineEmbedder(body.dimensions ?? options.dimensions ?? 256);
    const data = texts.map((text, index) => {
      const vector = embedder.vector(text);
      const embedding = body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector;
      return { object: 'embedding', index, embedding };
    });
    const prompt = texts.reduce((sum, t) => sum + tokensOf(t), 0);
    return { status: 200, body: { object: 'list', data, model: body.model, usage: { prompt_tokens: prompt, total_tokens: prompt } } };
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    inject(fault, injectOptions = {}) {
      rules.push({ fault, remaining: injectOptions.times ?? 1, endpoint: injectOptions.endpoint });
    },
    clearFaults() {
      rules = [];
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

function errorBody(message: string, type: string, code: string | null = null): Json {
  return { error: { message, type, param: null, code } };
}

/** What OpenAI's strict mode rejects: an object not closed or with an optional property, string length limits. */
function strictSchemaProblem(schema: unknown, path: string): string | undefined {
  if (typeof schema !== 'object' || schema === null) return `${path} is not a schema`;
  const node = schema as Json;
  const unsupported = ['minLength', 'maxLength'].find((keyword) => keyword in node);
  if (unsupported) return `${path}: '${unsupported}' is not permitted`;
  if (node.type === 'object') {
    if (node.additionalProperties !== false) return `${path}: additionalProperties must be false`;
    const names = Object.keys(node.properties ?? {});
    const required = new Set<string>(node.required ?? []);
    const missing = names.filter((n) => !required.has(n));
    if (missing.length > 0) return `${path}: every property must be required (${missing.join(', ')})`;
    for (const name of names) {
      const problem = strictSchemaProblem(node.properties[name], `${path}/properties/${name}`);
      if (problem) return problem;
    }
  }
  if (node.type === 'array' && node.items !== undefined) return strictSchemaProblem(node.items, `${path}/items`);
  return undefined;
}
