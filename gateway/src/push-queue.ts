/**
 * An async generator fed from outside: `push` values, `end` it, and the consumer's `return()`
 * (graphql-ws calls it when the client completes or disconnects) runs `onReturn` at once, even
 * while the consumer is waiting. A plain `async function*` cannot do that: its `return()` waits
 * for the pending `await` inside it.
 */
export class PushQueue<T> implements AsyncGenerator<T, undefined, unknown> {
  private readonly values: T[] = [];
  private readonly waiting: ((result: IteratorResult<T, undefined>) => void)[] = [];
  private done = false;

  /**
   * @param onReturn runs once when the queue ends, however it ends
   * @param onTake runs each time the consumer takes a queued value (room was made)
   */
  constructor(
    private readonly onReturn: () => void = () => {},
    private readonly onTake: () => void = () => {},
  ) {}

  push(value: T): void {
    if (this.done) return;
    const resolve = this.waiting.shift();
    if (resolve) resolve({ value, done: false });
    else this.values.push(value);
  }

  /** No more values: the consumer gets what is queued, then done. */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.onReturn();
    for (const resolve of this.waiting.splice(0)) resolve({ value: undefined, done: true });
  }

  get closed(): boolean {
    return this.done;
  }

  /** Values pushed and not yet taken. */
  get length(): number {
    return this.values.length;
  }

  next(): Promise<IteratorResult<T, undefined>> {
    if (this.values.length > 0) {
      const value = this.values.shift()!;
      this.onTake();
      return Promise.resolve({ value, done: false });
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  return(): Promise<IteratorResult<T, undefined>> {
    this.values.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(error: unknown): Promise<IteratorResult<T, undefined>> {
    this.values.length = 0;
    this.end();
    return Promise.reject(error);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }
}
