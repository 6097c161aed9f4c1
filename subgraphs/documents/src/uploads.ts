import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, unlink } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '@tributary/core';
import { validate as isUuid } from 'uuid';
import { queryRows, queryRun, type Database, type EntityManager } from '@tributary/core/db';
import { errorMessage, unavailableDependency } from '@tributary/core/errors';
import { serviceUnavailable } from '@tributary/core/graphql';
import { verifyIdentity, type Identity } from '@tributary/core/identity';
import { sendJson, type ExtraRoutes } from '@tributary/core/server';
import { detectFileType, extractFileText, FileRefusedError, type FileType } from './files.ts';

/** Bytes per row of `file_chunks`: what a download holds in memory at a time. */
export const FILE_CHUNK_BYTES = 256 * 1024;
/** A staged file no `uploadDocument` claimed within this long is deleted (by the next upload). */
export const UNCLAIMED_FILE_TTL_MS = 60 * 60 * 1000;

export interface UploadRoutesOptions {
  db: Database;
  logger: Logger;
  secret: string;
  /** DOCUMENT_MAX_FILE_BYTES */
  maxFileBytes: number;
  /** DOCUMENT_MAX_BYTES: the most text a file may yield. */
  maxTextBytes: number;
  /** Where a file is spooled while it arrives. Default: the OS's temporary directory. */
  spoolDir?: string;
}

/** What POST /uploads answers: the reference `uploadDocument(input: { file })` takes, and what was stored. */
export interface StagedFile {
  ref: string;
  name: string;
  contentType: FileType;
  size: number;
  sha256: string;
}

type ErrorBody = { errors: { message: string; extensions: Record<string, unknown> }[] };
const refuse = (res: ServerResponse, status: number, code: string, message: string, extensions: Record<string, unknown> = {}) => {
  const body: ErrorBody = { errors: [{ message, extensions: { code, ...extensions } }] };
  sendJson(res, status, body);
};

/** A failure that is the database briefly unreachable: 503 SERVICE_UNAVAILABLE with Retry-After, as the GraphQL side answers. Else false. */
const refusedAsUnavailable = (res: ServerResponse, error: unknown): boolean => {
  const dependency = unavailableDependency(error);
  if (!dependency || res.headersSent) return false;
  const { message, extensions } = serviceUnavailable(dependency);
  res.setHeader('retry-after', String(extensions.retryAfterSeconds));
  refuse(res, 503, 'SERVICE_UNAVAILABLE', message, extensions);
  return true;
};

/** A file name to keep: its last path segment, no control characters, at most 255 characters. */
export function cleanFileName(value: string | undefined): string {
  let name = '';
  try {
    name = decodeURIComponent(value ?? '');
  } catch {
    name = value ?? '';
  }
  name = name.replace(/[\u0000-\u001f\u007f]/g, '').split(/[\\/]/).pop()!.trim().slice(0, 255);
  return name || 'upload';
}

/**
 * Spool a request body to `path`, hashing and counting it. Past `max` bytes nothing more is
 * written (the spool is removed by the caller) but the body is still read to its end, so the
 * sender reads our 413 instead of a reset connection.
 */
async function spool(req: IncomingMessage, path: string, max: number): Promise<{ size: number; sha256: string; overflow: boolean }> {
  const out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
  const hash = createHash('sha256');
  let size = 0;
  let overflow = false;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (overflow) continue;
      if (size > max) {
        overflow = true;
        continue;
      }
      hash.update(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
    }
  } finally {
    out.end();
    await once(out, 'close').catch(() => {});
  }
  return { size, sha256: hash.digest('hex'), overflow };
}

async function storeFile(em: EntityManager, file: { id: string; identity: Identity; name: string; type: FileType; size: number; sha256: string; text: string; path: string }): Promise<void> {
  // One transaction: the file is there whole, with its text, or not at all.
  await em.transactional(async (tx) => {
    await queryRun(tx, 'insert into files (id, tenant_id, uploaded_by, name, content_type, size, sha256, text, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)', [
      file.id,
      file.identity.tenantId,
      file.identity.userId,
      file.name,
      file.type,
      file.size,
      file.sha256,
      file.text,
      new Date(),
    ]);
    let seq = 0;
    for await (const chunk of createReadStream(file.path, { highWaterMark: FILE_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
      await queryRun(tx, 'insert into file_chunks (file_id, seq, data) values (?, ?, ?)', [file.id, seq++, chunk]);
    }
  });
}

/** The caller's identity, signed by the gateway; null once a 401 is answered. */
function authenticate(secret: string, req: IncomingMessage, res: ServerResponse): Identity | null {
  try {
    return verifyIdentity(secret, req.headers);
  } catch (error) {
    req.resume();
    refuse(res, 401, 'UNAUTHENTICATED', errorMessage(error));
    return null;
  }
}

/**
 * Deletes staged files no `uploadDocument` claimed within {@link UNCLAIMED_FILE_TTL_MS}, at most
 * once a minute, in the background (called after each upload: no timer of its own to stop).
 */
function unclaimedFileSweeper(db: Database, logger: Logger): () => void {
  let lastSweep = 0;
  return () => {
    const now = Date.now();
    if (now - lastSweep < 60_000) return;
    lastSweep = now;
    queryRun(db.fork(), 'delete from files where document_id is null and created_at < ?', [new Date(now - UNCLAIMED_FILE_TTL_MS)]).then(
      (n) => n > 0 && logger.info({ files: n }, 'deleted unclaimed uploads'),
      (error) => logger.warn({ err: errorMessage(error) }, 'could not delete unclaimed uploads'),
    );
  };
}

/** `POST /uploads`: spool, check and store one file (see {@link uploadRoutes}), then sweep. */
async function receiveUpload(options: UploadRoutesOptions, req: IncomingMessage, res: ServerResponse, identity: Identity, sweep: () => void): Promise<void> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > options.maxFileBytes) {
    req.resume();
    res.setHeader('connection', 'close');
    return refuse(res, 413, 'PAYLOAD_TOO_LARGE', `the file is ${declared} bytes; the limit is ${options.maxFileBytes}`, { field: 'file', maxBytes: options.maxFileBytes });
  }
  const path = join(options.spoolDir ?? tmpdir(), `tributary-upload-${randomUUID()}`);
  try {
    const { size, sha256, overflow } = await spool(req, path, options.maxFileBytes);
    if (overflow) return refuse(res, 413, 'PAYLOAD_TOO_LARGE', `the file is ${size} bytes; the limit is ${options.maxFileBytes}`, { field: 'file', maxBytes: options.maxFileBytes });
    if (size === 0) return refuse(res, 400, 'BAD_USER_INPUT', 'the file is empty', { field: 'file' });
    // The libraries read whole files: this is the one copy in memory, at most maxFileBytes.
    const bytes = await readFile(path);
    const type = await detectFileType(bytes);
    const text = await extractFileText(bytes, type, options.maxTextBytes);
    const staged: StagedFile = { ref: randomUUID(), name: cleanFileName(req.headers['x-file-name'] as string | undefined), contentType: type, size, sha256 };
    await storeFile(options.db.fork(), { id: staged.ref, identity, name: staged.name, type, size, sha256, text, path });
    sendJson(res, 201, staged);
    sweep();
  } catch (error) {
    answerUploadFailure(options.logger, req, res, error);
  } finally {
    await unlink(path).catch(() => {});
  }
}

/** An upload that failed: the file refused (400 or 422), the database unreachable (503), the sender gone (nothing), else 500. */
function answerUploadFailure(logger: Logger, req: IncomingMessage, res: ServerResponse, error: unknown): void {
  if (error instanceof FileRefusedError || (error as { name?: unknown }).name === 'FileRefusedError') {
    const refused = error as FileRefusedError;
    return refuse(res, refused.code === 'BAD_USER_INPUT' ? 400 : 422, refused.code, refused.message, { field: 'file' });
  }
  // The sender went away: nothing to answer. (Not `req.destroyed`: a request is destroyed
  // once its body has been read, so that would leave every later failure unanswered.)
  if (req.socket.destroyed) return;
  // Before the sender's ECONNRESET below: the database's connection can be reset too.
  if (refusedAsUnavailable(res, error)) return;
  if ((error as { code?: unknown }).code === 'ECONNRESET') return;
  logger.error({ err: errorMessage(error) }, 'upload failed');
  if (!res.headersSent) refuse(res, 500, 'INTERNAL_SERVER_ERROR', 'internal error');
}

/** `GET|HEAD /files/<id>`: a claimed file of the caller's tenant, a chunk at a time; 404 for any other id. */
async function sendFile(db: Database, req: IncomingMessage, res: ServerResponse, identity: Identity, id: string): Promise<void> {
  const notFound = () => refuse(res, 404, 'NOT_FOUND', `file ${id.slice(0, 100)} not found`);
  if (!isUuid(id)) return notFound();
  const em = db.fork();
  const [file] = await queryRows<{ name: string; content_type: string; size: number | string; sha256: string }>(
    em,
    'select name, content_type, size, sha256 from files where id = ? and tenant_id = ? and document_id is not null',
    [id, identity.tenantId],
  );
  if (!file) return notFound();
  const ascii = file.name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  res.writeHead(200, {
    'content-type': file.content_type,
    'content-length': String(file.size),
    'content-disposition': `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(file.name)}`,
    'x-content-type-options': 'nosniff',
    'cache-control': 'private, no-store',
    etag: `"${file.sha256}"`,
    // RFC 9530: the digest of the whole file.
    'repr-digest': `sha-256=:${Buffer.from(file.sha256, 'hex').toString('base64')}:`,
  });
  if (req.method === 'HEAD') return void res.end();
  for (let seq = 0; ; seq++) {
    if (res.destroyed) return;
    const [chunk] = await queryRows<{ data: Buffer | Uint8Array }>(em, 'select data from file_chunks where file_id = ? and seq = ?', [id, seq]);
    if (!chunk) break;
    if (!res.write(Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength))) await once(res, 'drain');
  }
  res.end();
}

/**
 * `POST /uploads`: the gateway streams one file here (body: the bytes; `x-file-name`: its
 * name, URI-encoded), with the caller's signed identity. The file is spooled to disk as it
 * arrives (no database connection is held meanwhile), checked (size, type from the bytes, text
 * extracted), then stored in one transaction, unclaimed: 201 with a {@link StagedFile}, whose
 * `ref` `uploadDocument` claims. Refusals store nothing: 413 PAYLOAD_TOO_LARGE, 400
 * BAD_USER_INPUT (`extensions.field: "file"`), 422 UNREADABLE_DOCUMENT, 503 SERVICE_UNAVAILABLE
 * (the database briefly unreachable; with Retry-After).
 *
 * `GET /files/<ref>`: a claimed file of the caller's tenant, streamed a chunk at a time; any
 * other id is 404, whoever's it is.
 */
export function uploadRoutes(options: UploadRoutesOptions): ExtraRoutes {
  const { db, logger } = options;
  const sweep = unclaimedFileSweeper(db, logger);
  return (req, res, url) => {
    const fileId = /^\/files\/([^/]+)$/.exec(url.pathname)?.[1];
    const isUpload = url.pathname === '/uploads';
    if (!isUpload && fileId === undefined) return false;
    if (isUpload ? req.method !== 'POST' : req.method !== 'GET' && req.method !== 'HEAD') {
      req.resume();
      res.setHeader('allow', isUpload ? 'POST' : 'GET, HEAD');
      refuse(res, 405, 'METHOD_NOT_ALLOWED', 'method not allowed');
      return true;
    }
    const identity = authenticate(options.secret, req, res);
    if (!identity) return true;
    const work = isUpload ? receiveUpload(options, req, res, identity, sweep) : sendFile(db, req, res, identity, fileId!);
    work.catch((error) => {
      if (refusedAsUnavailable(res, error)) return;
      logger.error({ err: errorMessage(error) }, 'file route failed');
      if (!res.headersSent) refuse(res, 500, 'INTERNAL_SERVER_ERROR', 'internal error');
      else res.destroy();
    });
    return true;
  };
}
