/** Why an entry left the store (one replaced by a newer result is not counted). */
export type DropCause = 'event' | 'mutation' | 'expired' | 'evicted';

export interface ResultStoreOptions {
  ttlMs: number;
  maxEntries: number;
  now: () => number;
  /** Called for each entry dropped, with why. */
  onDrop(cause: DropCause): void;
}

interface Entry {
  data: Record<string, unknown>;
  tags: readonly string[];
  expiresAt: number;
}

/**
 * Results by key, each with its tags: a least-recently-used map with a time to live, and an index
 * from each tag to the keys carrying it, so an invalidation drops exactly the results it names.
 */
export class ResultStore {
  /** Insertion order is recency: a hit moves its entry to the end. */
  private readonly entries = new Map<string, Entry>();
  private readonly byTag = new Map<string, Set<string>>();

  constructor(private readonly options: ResultStoreOptions) {}

  get(key: string): Record<string, unknown> | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.options.now()) {
      this.delete(key, 'expired');
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.data;
  }

  /** Store (or replace) a result under its tags; the least recently used go past `maxEntries`. */
  put(key: string, data: Record<string, unknown>, tags: readonly string[]): void {
    if (this.entries.has(key)) this.delete(key, null);
    this.entries.set(key, { data, tags, expiresAt: this.options.now() + this.options.ttlMs });
    for (const tag of tags) {
      let keys = this.byTag.get(tag);
      if (!keys) this.byTag.set(tag, (keys = new Set()));
      keys.add(key);
    }
    while (this.entries.size > this.options.maxEntries) this.delete(this.entries.keys().next().value!, 'evicted');
  }

  /** Drop every result carrying one of `tags`. */
  dropTagged(tags: Iterable<string>, cause: DropCause): void {
    for (const tag of tags) {
      const keys = this.byTag.get(tag);
      if (!keys) continue;
      for (const key of keys) this.delete(key, cause);
    }
  }

  dropAll(cause: DropCause): void {
    for (const key of [...this.entries.keys()]) this.delete(key, cause);
  }

  get size(): number {
    return this.entries.size;
  }

  private delete(key: string, cause: DropCause | null): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    for (const tag of entry.tags) {
      const keys = this.byTag.get(tag);
      keys?.delete(key);
      if (keys?.size === 0) this.byTag.delete(tag);
    }
    if (cause) this.options.onDrop(cause);
  }
}
