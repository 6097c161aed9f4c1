import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import { cursorExpired, cursorPastEnd, type EventLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStart, type LogStats } from './log.ts';
import { parseEntry, parseHeaders } from './redis-options.ts';
import { topicMatches } from './transport.ts';

/**
 * Offsets from stream ids: the publish script (`redis-scripts.ts`) gives every log entry the id
 * `ms-seq` with seq < 8192, so `(ms - EPOCH) * 8192 + seq` grows with publish order, is never
 * reused and stays a safe integer until about 2057.
 */
const EPOCH_MS = 1_700_000_000_000;
const SEQ_SPAN = 8192;

export function offsetOf(id: string): number {
  const dash = id.indexOf('-');
  return (Number(id.slice(0, dash)) - EPOCH_MS) * SEQ_SPAN + Number(id.slice(dash + 1));
}

export function idOf(offset: number): string {
  const ms = Math.floor(offset / SEQ_SPAN);
  return `${ms + EPOCH_MS}-${offset - ms * SEQ_SPAN}`;
}

/** What the log needs from its transport. */
export interface RedisLogContext {
  /** `<ns>:log`. */
  key: string;
  /** The transport's command connection, once ready. */
  client(): Promise<Redis>;
  logger: Logger;
}

interface StreamInfo {
  length: number;
  /** Ids ever added, trimmed ones included. */
  added: number;
  lastId: string | undefined;
  firstId: string | undefined;
}

const PAGE = 200;
const BLOCK_MS = 5_000;

/**
 * The log as the stream `<ns>:log`, which each publish's script appends to before it routes.
 * Retention is applied by that script: MINID `~` for the age, and for the size MAXLEN `~` scaled
 * by `MEMORY USAGE` (a sampled estimate of the stream's bytes: the entries kept are cut in the
 * proportion the stream is over its budget). `~` trims whole radix nodes only, so a little more
 * than the limits may be kept, never less.
 *
 * A stream records how many entries were ever added but not which were trimmed (its
 * max-deleted-entry-id covers XDEL only), so once anything was trimmed a cursor is known good
 * only from the oldest kept entry on: an `{ after }` before it is CURSOR_EXPIRED.
 */
export class RedisEventLog implements EventLog {
  readonly kind = 'redis' as const;

  constructor(private readonly context: RedisLogContext) {}

  async read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined> {
    const client = await this.context.client();
    const info = await this.info(client);
    let after = this.startAfter(options.from, info);
    const end = info.lastId;
    if (end === undefined) return undefined;
    let last: number | undefined;
    while (!signal?.aborted) {
      const page = (await client.xrangeBuffer(this.context.key, `(${after}`, end, 'COUNT', PAGE)) as [Buffer, Buffer[]][];
      if (page.length === 0) break;
      for (const raw of page) {
        if (signal?.aborted) return last;
        const entry = toEntry(raw);
        after = idOf(entry.offset);
        last = entry.offset;
        if (matches(options, entry)) await onEntry(entry);
      }
    }
    return last;
  }

  /**
   * History and live entries are one loop of blocking XREADs after the last id handed out, on a
   * connection of the follower's own: no gap and no duplicate between them, and after a lost
   * connection it reads again after the same id.
   */
  async follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle> {
    const client = await this.context.client();
    let after = this.startAfter(options.from, await this.info(client));
    const connection = client.duplicate({ lazyConnect: true, maxRetriesPerRequest: null });
    connection.on('error', () => {});
    await connection.connect();
    let closed = false;
    const loop = (async () => {
      let failures = 0;
      while (!closed) {
        try {
          const reply = await connection.xreadBuffer('COUNT', PAGE, 'BLOCK', BLOCK_MS, 'STREAMS', this.context.key, after);
          failures = 0;
          for (const raw of (reply?.[0]?.[1] ?? []) as [Buffer, Buffer[]][]) {
            const entry = toEntry(raw);
            after = idOf(entry.offset);
            if (!closed && matches(options, entry)) onEntry(entry);
          }
        } catch (error) {
          if (closed) break;
          failures++;
          if (failures === 1 || failures % 20 === 0) this.context.logger.warn({ err: errorMessage(error) }, 'log follower read failed: reading again');
          await new Promise((r) => setTimeout(r, Math.min(100 * failures, 2_000)));
        }
      }
    })();
    return {
      close: async () => {
        closed = true;
        connection.disconnect();
        await loop;
      },
    };
  }

  async stats(): Promise<LogStats> {
    const client = await this.context.client();
    const info = await this.info(client);
    if (info.length === 0 || info.firstId === undefined || info.lastId === undefined) return { entries: 0, bytes: 0, first: undefined, last: undefined, oldestAgeSeconds: 0 };
    const bytes = await client.memory('USAGE', this.context.key);
    const firstMs = Number(info.firstId.slice(0, info.firstId.indexOf('-')));
    return {
      entries: info.length,
      bytes: bytes ?? undefined,
      first: offsetOf(info.firstId),
      last: offsetOf(info.lastId),
      oldestAgeSeconds: Math.max(0, (Date.now() - firstMs) / 1000),
    };
  }

  /** The id a read starts after (exclusive). */
  private startAfter(from: LogStart, info: StreamInfo): string {
    if (from === 'beginning') return '0-0';
    if (from === 'end') return info.lastId ?? '0-0';
    if ('time' in from) {
      // Entries stored at or after the time: after the last id of the millisecond before.
      const ms = from.time.getTime();
      return ms <= 0 ? '0-0' : `${ms - 1}-${SEQ_SPAN - 1}`;
    }
    const last = info.lastId === undefined ? -1 : offsetOf(info.lastId);
    if (from.after > last) throw cursorPastEnd(from.after, last);
    if (info.added > info.length) {
      const firstKept = info.firstId === undefined ? last + 1 : offsetOf(info.firstId);
      if (from.after < firstKept && !(info.firstId === undefined && from.after === last)) throw cursorExpired(from.after, firstKept);
    }
    return idOf(from.after);
  }

  private async info(client: Redis): Promise<StreamInfo> {
    let flat: unknown[];
    try {
      flat = (await client.xinfo('STREAM', this.context.key)) as unknown[];
    } catch (error) {
      if (/no such key/i.test(errorMessage(error))) return { length: 0, added: 0, lastId: undefined, firstId: undefined };
      throw error;
    }
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < flat.length; i += 2) fields.set(String(flat[i]), flat[i + 1]);
    const first = fields.get('first-entry') as [string, unknown] | null | undefined;
    const lastId = String(fields.get('last-generated-id') ?? '0-0');
    return {
      length: Number(fields.get('length') ?? 0),
      added: Number(fields.get('entries-added') ?? 0),
      lastId: lastId === '0-0' ? undefined : lastId,
      firstId: first ? String(first[0]) : undefined,
    };
  }
}

function toEntry(raw: [Buffer, Buffer[] | null]): LogEntry {
  const { entryId, fields } = parseEntry(raw);
  return {
    offset: offsetOf(entryId),
    messageId: fields?.id ? fields.id : undefined,
    routingKey: fields?.key ?? '',
    headers: parseHeaders(fields?.headers ?? '{}'),
    body: fields?.body ?? Buffer.alloc(0),
  };
}

function matches(options: LogReadOptions, entry: LogEntry): boolean {
  return !options.types || options.types.some((pattern) => topicMatches(pattern, entry.routingKey));
}
