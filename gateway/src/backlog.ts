import type { ExecutionResult } from 'graphql';
import { PushQueue } from './push-queue.ts';
import type { Due } from './resume.ts';

/**
 * What is due to one subscriber: events waiting to be resolved (`pending`) and results waiting
 * for its connection (`queue`), bounded together by `maxQueued`; what passes the bound is the
 * subclass's to decide ({@link overflow}). A replay hands its events over only when there is room.
 */
export abstract class Backlog {
  /** What the client receives; its `return()` (the client going) ends every wait below. */
  readonly queue: PushQueue<ExecutionResult>;
  protected readonly pending: Due[] = [];
  /** The offset of the last event taken to be resolved. */
  protected lastTaken: number | undefined;
  private wake: (() => void) | undefined;
  private room: (() => void) | undefined;

  constructor(
    protected readonly maxQueued: number,
    onReturn: () => void,
  ) {
    this.queue = new PushQueue<ExecutionResult>(
      () => {
        onReturn();
        this.wake?.();
        this.notifyRoom();
      },
      () => this.notifyRoom(),
    );
  }

  /** Everything due: events not yet resolved and results not yet taken. */
  protected get due(): number {
    return this.pending.length + this.queue.length;
  }

  /** More than `maxQueued` is due. */
  protected abstract overflow(): void;

  protected enqueue(due: Due): void {
    if (this.queue.closed) return;
    this.pending.push(due);
    this.wake?.();
    if (this.due > this.maxQueued) this.overflow();
  }

  /**
   * A replayed event, once less than half of `maxQueued` is due: a history is read as fast as
   * the client takes it, and leaves room for the live events that follow it.
   */
  protected async deliver(due: Due): Promise<void> {
    while (!this.queue.closed && this.due >= Math.max(1, this.maxQueued >> 1)) {
      await new Promise<void>((resolve) => (this.room = resolve));
    }
    this.enqueue(due);
  }

  /** Resolves with the next event, or undefined once the client has gone. */
  protected nextEvent(): Promise<Due | undefined> {
    return new Promise((resolve) => {
      const take = () => {
        const due = this.pending.shift();
        if (due) this.notifyRoom();
        if (due?.offset !== undefined) this.lastTaken = due.offset;
        resolve(due);
      };
      if (this.pending.length > 0 || this.queue.closed) return take();
      this.wake = () => {
        this.wake = undefined;
        take();
      };
    });
  }

  private notifyRoom(): void {
    const room = this.room;
    this.room = undefined;
    room?.();
  }
}
