import busboy from 'busboy';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { errorMessage, signIdentity, type Logger } from '@tributary/core';
import { HttpRequestError, sendJson } from '@tributary/core/server';
import { Agent, type Dispatcher } from 'undici';
import type { GatewayContext } from './context.ts';

export interface FileUploadsOptions {
  /** Signs the caller's identity on every request to the uploads subgraph. */
  secret: string;
  logger: Logger;
  /** Largest `operations` or `map` field, bytes (GATEWAY_MAX_BODY_BYTES). */
  maxFieldBytes: number;
  /** Most files in one request (GATEWAY_MAX_FILES). */
  maxFiles: number;
  /** Largest file the gateway passes on, bytes (GATEWAY_MAX_FILE_BYTES); the subgraph's own limit is usually lower. */
  maxFileBytes: number;
}

/** Response headers of a download the gateway passes on. */
const DOWNLOAD_HEADERS = ['content-type', 'content-length', 'content-disposition', 'etag', 'repr-digest', 'cache-control', 'x-content-type-options', 'retry-after'];

const badRequest = (message: string) => new HttpRequestError(400, 'BAD_REQUEST', message);
const tooLarge = (message: string) => new HttpRequestError(413, 'PAYLOAD_TOO_LARGE', message);

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * The value at `path` (`variables.input.file`, `variables.files.0`) of an operation, where the
 * GraphQL multipart request spec says a file goes: it must be there and be null.
 */
function placeAt(operation: Record<string, unknown>, path: string, value: string): void {
  const keys = path.split('.');
  if (keys[0] !== 'variables' || keys.length < 2) throw badRequest(`map path "${path.slice(0, 200)}" is not in the operation's variables`);
  let node: unknown = operation;
  for (const key of keys.slice(0, -1)) {
    node = Array.isArray(node) ? node[Number(key)] : isObject(node) ? node[key] : undefined;
  }
  const last = keys.at(-1)!;
  const holder = node as Record<string, unknown> | unknown[];
  const current = Array.isArray(holder) ? holder[Number(last)] : isObject(holder) && Object.hasOwn(holder, last) ? holder[last] : undefined;
  if ((!Array.isArray(holder) && !isObject(holder)) || current !== null) throw badRequest(`map path "${path.slice(0, 200)}" does not lead to a null in the operation`);
  if (Array.isArray(holder)) holder[Number(last)] = value;
  else holder[last] = value;
}

function parseJsonField(name: string, value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    throw badRequest(`the ${name} field is not valid JSON`);
  }
}

/** The spec's `map`: file field name → the paths its file goes to. */
function parseMap(value: unknown, maxFiles: number): Map<string, string[]> {
  if (!isObject(value)) throw badRequest('map must be a JSON object of file field names to lists of paths');
  const entries = Object.entries(value);
  if (entries.length > maxFiles) throw tooLarge(`the request maps ${entries.length} files; the limit is ${maxFiles}`);
  const map = new Map<string, string[]>();
  for (const [name, paths] of entries) {
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((p) => typeof p === 'string')) throw badRequest(`map["${name.slice(0, 100)}"] must be a non-empty list of paths`);
    map.set(name, paths as string[]);
  }
  return map;
}

/**
 * Files in GraphQL requests (the GraphQL multipart request spec), for a gateway that forwards
 * JSON only: each file part is streamed, as it arrives, to the uploads subgraph's `POST
 * /uploads` (beside its GraphQL path, with the caller's signed identity), which stores it and
 * answers `201 { ref }`; the operation is then executed with each file's `ref` in its place. A
 * refusal from that endpoint (status and `{ errors }`) is the client's answer as it is.
 * Downloads, `GET /files/<id>`, are streamed back from the same subgraph's `/files/<id>`.
 * Nothing holds more of a file than a stream's buffer.
 */
export class FileUploads {
  private readonly agent = new Agent({ keepAliveTimeout: 30_000, keepAliveMaxTimeout: 30_000 });
  private base: URL | undefined;

  constructor(private readonly options: FileUploadsOptions) {}

  /** The uploads subgraph's GraphQL URL (its endpoints are beside it), or undefined: uploads off. */
  setTarget(graphqlUrl: string | undefined): void {
    this.base = graphqlUrl ? new URL(graphqlUrl) : undefined;
  }

  get enabled(): boolean {
    return this.base !== undefined;
  }

  private endpoint(path: string): URL {
    if (!this.base) throw new HttpRequestError(400, 'BAD_REQUEST', 'this gateway takes no file uploads');
    return new URL(path, this.base);
  }

  /** Stream one file to the uploads endpoint; resolves to its reference. */
  private async store(file: Readable, info: busboy.FileInfo, identity: GatewayContext, signal: AbortSignal): Promise<string> {
    const url = this.endpoint('uploads');
    // The part goes through a stream of ours: if the upload is abandoned, the part is still read
    // to its end (busboy stalls on an unread part), whatever undici does with the body.
    const body = new PassThrough();
    file.pipe(body);
    const release = () => {
      file.unpipe(body);
      file.resume();
    };
    body.once('close', release);
    let response: Dispatcher.ResponseData;
    try {
      response = await this.agent.request({
        origin: url.origin,
        path: url.pathname,
        method: 'POST',
        headers: {
          ...signIdentity(this.options.secret, identity),
          ...(identity.traceparent ? { traceparent: identity.traceparent } : {}),
          'content-type': info.mimeType || 'application/octet-stream',
          'x-file-name': encodeURIComponent(info.filename ?? ''),
        },
        body,
        signal,
        headersTimeout: 120_000,
        bodyTimeout: 120_000,
      });
    } catch (error) {
      release();
      if (signal.aborted) throw signal.reason;
      this.options.logger.error({ err: errorMessage(error) }, 'could not reach the uploads endpoint');
      throw new HttpRequestError(502, 'BAD_GATEWAY', 'the file could not be stored');
    }
    const text = await response.body.text();
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch {
      answer = undefined;
    }
    if (response.statusCode === 201 && isObject(answer) && typeof answer.ref === 'string') return answer.ref;
    const errors = isObject(answer) && Array.isArray(answer.errors) ? (answer.errors as HttpRequestError['errors']) : undefined;
    // Its refusals, and its 503 (its database briefly unreachable: retry), are the client's answer.
    if (((response.statusCode >= 400 && response.statusCode < 500) || response.statusCode === 503) && errors) throw new HttpRequestError(response.statusCode, 'BAD_REQUEST', errors[0]?.message ?? 'refused', {}, errors);
    this.options.logger.error({ status: response.statusCode, body: text.slice(0, 500) }, 'the uploads endpoint failed');
    throw new HttpRequestError(502, 'BAD_GATEWAY', 'the file could not be stored');
  }

  /**
   * Read a multipart request: `operations` (one operation; batches are refused), `map`, then
   * the files, each stored as it streams in. Resolves to the operation with every file's
   * reference at its paths. Refusals: 400 BAD_REQUEST (malformed, out of order, a mapped file
   * missing), 413 PAYLOAD_TOO_LARGE (a field over `maxFieldBytes`, more than `maxFiles`
   * files, a file over `maxFileBytes`), or the uploads endpoint's own answer.
   */
  readMultipart(req: IncomingMessage, identity: GatewayContext): Promise<Record<string, unknown>> {
    const { maxFieldBytes, maxFiles, maxFileBytes } = this.options;
    return new Promise((resolve, reject) => {
      let parser: busboy.Busboy;
      try {
        // Browsers and curl send file names as raw UTF-8, not latin1 (busboy's default).
        parser = busboy({ headers: req.headers, defParamCharset: 'utf8', limits: { fieldSize: maxFieldBytes, fields: 10, files: maxFiles, fileSize: maxFileBytes, parts: maxFiles + 10 } });
      } catch (error) {
        req.resume();
        reject(badRequest(`malformed multipart request: ${errorMessage(error)}`));
        return;
      }
      let settled = false;
      const abort = new AbortController();
      const fail = (error: unknown) => {
        if (settled) return;
        settled = true;
        abort.abort(error);
        // Read the rest and drop it, so the client gets our answer instead of a reset.
        req.unpipe(parser);
        req.resume();
        reject(error);
      };
      let operation: Record<string, unknown> | undefined;
      let map: Map<string, string[]> | undefined;
      const stored = new Map<string, Promise<string>>();
      parser.on('field', (name, value, info) => {
        if (settled) return;
        try {
          if (info.valueTruncated) throw tooLarge(`the ${name.slice(0, 100)} field exceeds ${maxFieldBytes} bytes`);
          if (name === 'operations') {
            const parsed = parseJsonField(name, value);
            if (!isObject(parsed)) throw badRequest('operations must be one operation (a JSON object): batches are not supported');
            operation = parsed;
          } else if (name === 'map') {
            if (!operation) throw badRequest('the operations field must come before map');
            map = parseMap(parseJsonField(name, value), maxFiles);
          }
        } catch (error) {
          fail(error);
        }
      });
      parser.on('file', (name, file, info) => {
        if (settled || !map || !map.has(name) || stored.has(name)) {
          if (!settled && !map) fail(badRequest('the operations and map fields must come before the files'));
          file.resume(); // a part the map does not name is ignored, as the spec says
          return;
        }
        file.once('limit', () => fail(tooLarge(`the file ${name.slice(0, 100)} exceeds ${maxFileBytes} bytes`)));
        const reference = this.store(file, info, identity, abort.signal);
        reference.catch(fail);
        stored.set(name, reference);
      });
      parser.once('filesLimit', () => fail(tooLarge(`more than ${maxFiles} files`)));
      parser.once('fieldsLimit', () => fail(tooLarge('too many fields')));
      parser.once('partsLimit', () => fail(tooLarge('too many parts')));
      parser.once('error', (error) => fail(badRequest(`malformed multipart request: ${errorMessage(error)}`)));
      parser.once('close', () => {
        if (settled) return;
        void (async () => {
          if (!operation || !map) throw badRequest('a multipart request needs an operations and a map field');
          for (const [name, paths] of map) {
            const reference = stored.get(name);
            if (!reference) throw badRequest(`map names the file "${name.slice(0, 100)}", which the request does not carry`);
            const ref = await reference;
            for (const path of paths) placeAt(operation, path, ref);
          }
          return operation;
        })().then((result) => {
          if (settled) return;
          settled = true;
          resolve(result);
        }, fail);
      });
      req.once('error', (error) => fail(badRequest(`the request failed: ${errorMessage(error)}`)));
      req.pipe(parser);
    });
  }

  /**
   * `GET /files/<id>` (and HEAD): the uploads subgraph's `/files/<id>`, streamed, with the
   * caller's signed identity; its 404 for another tenant's file is passed on. Returns false for
   * any other path.
   */
  route(req: IncomingMessage, res: ServerResponse, url: URL, authenticate: (req: IncomingMessage) => Promise<GatewayContext>): boolean {
    const match = /^\/files\/([^/]+)$/.exec(url.pathname);
    if (!match || !this.base) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendJson(res, 405, { errors: [{ message: 'method not allowed', extensions: { code: 'METHOD_NOT_ALLOWED' } }] });
      return true;
    }
    void (async () => {
      let identity: GatewayContext;
      try {
        identity = await authenticate(req);
      } catch (error) {
        return sendJson(res, 401, { errors: [{ message: errorMessage(error), extensions: { code: 'UNAUTHENTICATED' } }] });
      }
      const target = this.endpoint(`files/${match[1]}`);
      const response = await this.agent.request({
        origin: target.origin,
        path: target.pathname,
        method: req.method as 'GET' | 'HEAD',
        headers: { ...signIdentity(this.options.secret, identity), ...(identity.traceparent ? { traceparent: identity.traceparent } : {}) },
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      res.statusCode = response.statusCode;
      for (const name of DOWNLOAD_HEADERS) {
        const value = response.headers[name];
        if (value !== undefined) res.setHeader(name, value);
      }
      await pipeline(response.body, res);
    })().catch((error) => {
      this.options.logger.warn({ err: errorMessage(error) }, 'download failed');
      if (!res.headersSent) sendJson(res, 502, { errors: [{ message: 'the file could not be read', extensions: { code: 'BAD_GATEWAY' } }] });
      else res.destroy();
    });
    return true;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
