/** How many recent invalidations a miss can be checked against before it gives up storing. */
const RECENT_INVALIDATIONS = 4_096;

/**
 * The recent invalidations, numbered: a result read since sequence `n` is stored only if no
 * invalidation after `n` touched one of its tags (the result may predate the change).
 */
export class InvalidationLog {
  private sequence = 0;
  /** `everything` after a clear. */
  private readonly recent: { sequence: number; tags: ReadonlySet<string> | 'everything' }[] = [];

  /** The current sequence: what a miss begins at. */
  get current(): number {
    return this.sequence;
  }

  record(tags: ReadonlySet<string> | 'everything'): void {
    this.recent.push({ sequence: ++this.sequence, tags });
    if (this.recent.length > RECENT_INVALIDATIONS) this.recent.shift();
  }

  /**
   * Whether an invalidation since `since` may have touched one of `tags` (scoped ones): true too
   * when the invalidations since then are no longer all remembered.
   */
  overtook(since: number, tags: readonly string[]): boolean {
    if (this.sequence === since) return false;
    const oldest = this.recent[0];
    if (!oldest || oldest.sequence > since + 1) return true;
    for (let i = this.recent.length - 1; i >= 0 && this.recent[i]!.sequence > since; i--) {
      const seen = this.recent[i]!.tags;
      if (seen === 'everything' || tags.some((t) => seen.has(t))) return true;
    }
    return false;
  }
}
