import type { Logger } from 'pino';
import type { LogRetention } from './log-rabbitmq.ts';

export interface RedisTransportOptions {
  /** `redis://` or `rediss://`. */
  url: string;
  /** Key prefix: namespace `tributary` → keys `tributary:…`. */
  namespace: string;
  logger: Logger;
  /** CLIENT SETNAME of every connection (tests and operators tell them apart by it). */
  connectionName?: string;
  /** How long publish() waits for the server (connection and script). Default 10 000 ms. */
  publishTimeoutMs?: number;
  /**
   * The event log, the stream `<ns>:log` each publish also writes to (`log-redis.ts`), with its
   * retention; `false` turns it off. Default: `DEFAULT_EVENT_LOG_RETENTION` (7 days, 10 GB).
   */
  log?: LogRetention | false;
  /**
   * This process's name in every queue's consumer group. Entries it held and never acked are
   * read again first by the next consumer of that name (a restart with the same name), and taken
   * over by other processes once idle for `claimMinIdleMs`. Default `<hostname>:<pid>`.
   */
  consumerName?: string;
  /** An entry another consumer holds unacked this long is taken over (XAUTOCLAIM). Default 30 000 ms. */
  claimMinIdleMs?: number;
  /** How often a consumer looks for such entries and tells it still holds its own. Default a third of claimMinIdleMs. */
  claimIntervalMs?: number;
  /** Deliveries of one entry before the transport dead-letters it (code DELIVERY_LIMIT), as a quorum queue's delivery-limit. Default 20. */
  deliveryLimit?: number;
  /** An exclusive queue's binding lives this long unless its owner refreshes it (every third of it). Default 30 000 ms. */
  exclusiveTtlMs?: number;
}

/** The keys of a namespace. Queue names may hold dots; `:` separates our parts. */
export class RedisKeys {
  readonly prefix: string;
  readonly log: string;
  readonly bindings: string;
  constructor(namespace: string) {
    this.prefix = `${namespace}:`;
    this.log = `${namespace}:log`;
    this.bindings = `${namespace}:bindings`;
  }
  queue(queue: string): string {
    return `${this.prefix}q:${queue}`;
  }
  delayed(queue: string): string {
    return `${this.queue(queue)}:delayed`;
  }
  dlq(queue: string): string {
    return `${this.queue(queue)}:dlq`;
  }
}

/** The consumer group of every queue stream: one per queue, as a queue has one set of consumers. */
export const GROUP = 'g';

/** A stream entry's fields as the transport writes them. */
export interface StreamFields {
  id: string;
  key: string;
  headers: string;
  body: Buffer;
}

/** `[id, [field, value, …]]` as ioredis' Buffer commands return an entry; undefined for a deleted one. */
export function parseEntry(raw: [Buffer, Buffer[] | null]): { entryId: string; fields: StreamFields | undefined } {
  const [id, flat] = raw;
  const entryId = id.toString();
  if (!flat) return { entryId, fields: undefined };
  const map = new Map<string, Buffer>();
  for (let i = 0; i + 1 < flat.length; i += 2) map.set(flat[i]!.toString(), flat[i + 1]!);
  return {
    entryId,
    fields: { id: map.get('id')?.toString() ?? '', key: map.get('key')?.toString() ?? '', headers: map.get('headers')?.toString() ?? '{}', body: map.get('body') ?? Buffer.alloc(0) },
  };
}

export function parseHeaders(json: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(json);
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
