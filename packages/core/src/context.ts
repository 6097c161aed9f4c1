import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';

/**
 * What travels with one request or one message through async code: its trace and tenant.
 * Log lines and published events read it, so nobody has to thread it through arguments.
 */
export interface ExecutionContext {
  traceId: string;
  /** Span id of the current unit of work; events published here name it as their parent. */
  spanId: string;
  sampled: boolean;
  tenantId?: string;
}

const storage = new AsyncLocalStorage<ExecutionContext>();

export function currentContext(): ExecutionContext | undefined {
  return storage.getStore();
}

export function runInContext<T>(context: ExecutionContext, fn: () => T): T {
  return storage.run(context, fn);
}

// Span ids are made per message; one crypto call per 4 KiB instead of per id keeps that cheap.
let pool = Buffer.alloc(0);
let offset = 0;
function randomHex(bytes: number): string {
  if (offset + bytes > pool.length) {
    pool = randomBytes(4096);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return hex;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * A context continuing the trace of an incoming W3C `traceparent` (a fresh span within it),
 * or starting a new trace when there is none or it is malformed (the spec says to restart).
 */
export function contextFromTraceparent(traceparent: string | undefined, tenantId?: string): ExecutionContext {
  const match = traceparent ? TRACEPARENT.exec(traceparent) : null;
  const traceId = match && !/^0+$/.test(match[2]!) ? match[2]! : randomHex(16);
  const sampled = match ? (Number.parseInt(match[4]!, 16) & 1) === 1 : true;
  const context: ExecutionContext = { traceId, spanId: randomHex(8), sampled };
  if (tenantId !== undefined) context.tenantId = tenantId;
  return context;
}

/**
 * The span a traceparent names, as a context: its trace and its span id (not a fresh one), for
 * starting a child span under it. A missing or malformed traceparent starts a new trace.
 */
export function parentFromTraceparent(traceparent: string | undefined, tenantId?: string): ExecutionContext {
  const context = contextFromTraceparent(traceparent, tenantId);
  const match = traceparent ? TRACEPARENT.exec(traceparent) : null;
  return match && match[2] === context.traceId ? { ...context, spanId: match[3]! } : context;
}

/** The `traceparent` naming the current span as parent, for an outgoing event or request. */
export function traceparentOf(context: ExecutionContext): string {
  return `00-${context.traceId}-${context.spanId}-${context.sampled ? '01' : '00'}`;
}
