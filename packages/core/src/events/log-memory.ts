import { topicMatches, type OutgoingMessage } from './transport.ts';
import { cursorExpired, cursorPastEnd, type EventLog, type LogEntry, type LogFollowHandle, type LogReadOptions, type LogStats } from './log.ts';

interface StoredEntry extends LogEntry {
  storedAt: number;
}

/**
 * The log in an array, for the in-memory bus without a database (tests, single-process use).
 * Retention by count and age is applied on append, as a broker trims whole segments.
 */
export class MemoryEventLog implements EventLog {
  readonly kind = 'memory' as const;
  private readonly entries: StoredEntry[] = [];
  private next = 0;
  private readonly followers = new Set<(entry: LogEntry) => void>();

  private bytes = 0;

  constructor(private readonly retention: { maxEntries?: number; maxAgeMs?: number; maxBytes?: number } = {}) {}

  /** Called by the transport for every published message, in publish order. */
  append(messages: readonly OutgoingMessage[]): void {
    const now = Date.now();
    for (const m of messages) {
      const entry: StoredEntry = { offset: this.next++, messageId: m.messageId, routingKey: m.routingKey, headers: { ...m.headers }, body: Buffer.from(m.body), storedAt: now };
      this.entries.push(entry);
      this.bytes += entry.body.length;
      for (const follower of this.followers) follower(entry);
    }
    this.trim(now);
  }

  /** Apply retention now (on every append; tests of expiry call it too). */
  trim(now = Date.now()): void {
    const { maxEntries, maxAgeMs, maxBytes } = this.retention;
    let drop = 0;
    if (maxEntries !== undefined) drop = Math.max(drop, this.entries.length - maxEntries);
    if (maxAgeMs !== undefined) while (drop < this.entries.length && this.entries[drop]!.storedAt < now - maxAgeMs) drop++;
    let kept = this.bytes;
    for (let i = 0; i < drop; i++) kept -= this.entries[i]!.body.length;
    if (maxBytes !== undefined) while (drop < this.entries.length && kept > maxBytes) kept -= this.entries[drop++]!.body.length;
    if (drop > 0) {
      this.entries.splice(0, drop);
      this.bytes = kept;
    }
  }

  async read(options: LogReadOptions, onEntry: (entry: LogEntry) => Promise<void> | void, signal?: AbortSignal): Promise<number | undefined> {
    const end = this.next;
    let index = this.startIndex(options);
    let last: number | undefined;
    while (!signal?.aborted) {
      // Entries may be trimmed while a slow reader awaits: find the position again by offset.
      const entry = this.entries[index];
      if (!entry || entry.offset >= end) break;
      last = entry.offset;
      if (matches(options, entry)) await onEntry(entry);
      index = this.indexAfter(last);
    }
    return last;
  }

  async follow(options: LogReadOptions, onEntry: (entry: LogEntry) => void): Promise<LogFollowHandle> {
    const start = this.startIndex(options);
    let closed = false;
    const follower = (entry: LogEntry) => {
      if (!closed && matches(options, entry)) onEntry(entry);
    };
    // Synchronous from here: nothing is appended between the history and the live part.
    for (const entry of this.entries.slice(start)) follower(entry);
    this.followers.add(follower);
    return {
      close: async () => {
        closed = true;
        this.followers.delete(follower);
      },
    };
  }

  async stats(): Promise<LogStats> {
    const first = this.entries[0];
    return {
      entries: this.entries.length,
      bytes: this.bytes,
      first: first?.offset,
      last: this.entries.at(-1)?.offset,
      oldestAgeSeconds: first ? Math.max(0, (Date.now() - first.storedAt) / 1000) : 0,
    };
  }

  private startIndex(options: LogReadOptions): number {
    const { from } = options;
    if (from === 'beginning') return 0;
    if (from === 'end') return this.entries.length;
    if ('time' in from) {
      const at = from.time.getTime();
      const i = this.entries.findIndex((e) => e.storedAt >= at);
      return i < 0 ? this.entries.length : i;
    }
    const first = this.entries[0]?.offset ?? this.next;
    if (from.after >= this.next) throw cursorPastEnd(from.after, this.next - 1);
    if (from.after + 1 < first) throw cursorExpired(from.after, first);
    return this.indexAfter(from.after);
  }

  private indexAfter(offset: number): number {
    const first = this.entries[0]?.offset ?? this.next;
    return Math.max(0, offset + 1 - first);
  }
}

function matches(options: LogReadOptions, entry: LogEntry): boolean {
  return !options.types || options.types.some((pattern) => topicMatches(pattern, entry.routingKey));
}
