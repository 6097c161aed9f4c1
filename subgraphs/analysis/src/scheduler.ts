import { errorMessage } from '@tributary/core';
import { AsyncLocalStorage } from 'node:async_hooks';
import { listenChannel, type Database, type EntityManager } from '@tributary/core/db';
import type { ServiceWorker } from '@tributary/core/service';
import type { Logger } from 'pino';
import { CANCEL_CHANNEL, WORK_CHANNEL } from './entities.ts';
import { nextAvailableInMs, type Claimed } from './queue.ts';

/** The safety net when no notification arrives (a lost LISTEN connection), ms. */
const POLL_MS = 2_000;
/** The wait after a claim failed (database down), ms. */
const RETRY_MS = 1_000;

export interface SchedulerOptions {
  db: Database;
  logger: Logger;
  /** Model calls in flight at once in this process (ANALYSIS_CONCURRENCY). */
  slots: number;
  /** Claim the next document in the transaction given (and publish that it started), or undefined. */
  claim(em: EntityManager): Promise<Claimed | undefined>;
  /** Analyse and settle a claimed document; `signal` aborts when its job is cancelled or the service stops. */
  work(claimed: Claimed, signal: AbortSignal): Promise<void>;
  /**
   * Whether a call ending can make other work claimable: with a per-tenant cap it can (the
   * tenant drops below its cap), so a freed slot always looks; without one, a freed slot looks
   * only when work may be waiting (see {@link AnalysisScheduler.wake}).
   */
  freedSlotMayUnblock: boolean;
}

/** Slots set aside for claims made in another transaction (the consumer's); see {@link AnalysisScheduler.reserve}. */
export interface Reservation {
  readonly slots: number;
  /** The transaction ended: start what it claimed (committed), or give the slots back. */
  end(committed: boolean, claimed: readonly Claimed[]): void;
}

/**
 * One analysis process's call slots. Whenever a slot is free it claims the next document from
 * the work table, one claim at a time, until the slots are full or nothing is claimable; then
 * it sleeps until work arrives (an enqueue that leaves work waiting notifies every process on
 * commit), a slot frees, a delayed row becomes claimable, or the poll. So an idle deployment
 * starts a new document as soon as its enqueue commits, with no polling interval added.
 *
 * The consumer that enqueues also claims, in its own transaction, as many documents as this
 * process has free slots ({@link reserve}): at low load a document is then claimed with no
 * transaction of its own, and its enqueue wakes nobody. And the scheduler remembers whether its
 * last claim came back empty: a call that ends then does not send it to the table for nothing
 * (without a tenant cap, nothing a call ending does makes work claimable).
 */
export class AnalysisScheduler implements ServiceWorker {
  private running = false;
  private claiming = false;
  private again = false;
  /** Whether claimable work may be waiting: false once a claim came back empty, until work is announced. */
  private maybeWork = true;
  /** Slots taken by claims not yet ended: this scheduler's own, and others' transactions' ({@link reserve}). */
  private reserved = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly unlisten: (() => Promise<void>)[] = [];
  private readonly inFlight = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private readonly log: Logger;
  /**
   * Runs a function in the async context the scheduler was made in. A wake-up can come from
   * inside another transaction's context (PGlite delivers a NOTIFY while it runs the committing
   * query, and MikroORM keeps the current transaction in that context): claims and calls made
   * there would join a transaction that has ended.
   */
  private readonly inOwnContext = AsyncLocalStorage.snapshot();

  constructor(private readonly options: SchedulerOptions) {
    this.log = options.logger.child({ component: 'analysis-scheduler' });
  }

  /** Documents being analysed in this process now. */
  get active(): number {
    return this.inFlight.size;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { db } = this.options;
    this.unlisten.push(await listenChannel(db, WORK_CHANNEL, () => this.wake(), this.log));
    this.unlisten.push(
      await listenChannel(db, CANCEL_CHANNEL, (documentId) => this.inFlight.get(documentId)?.abort.abort(new Error(`the job of document ${documentId} was cancelled`)), this.log),
    );
    this.wake();
  }

  /**
   * Claim now if a slot is free. `work` (the default) says work may have become claimable (it
   * arrived, a retry's delay or the poll ran out); false, only that a slot freed, which claims
   * only if work may still be waiting.
   */
  wake(work = true): void {
    if (work) this.maybeWork = true;
    if (!this.running || !this.maybeWork) return;
    if (this.claiming) {
      this.again = true;
      return;
    }
    this.claiming = true;
    void this.inOwnContext(() => this.fill()).finally(() => {
      this.claiming = false;
      // A wake-up that came after the last claim (while the next timer was being worked out) would
      // otherwise wait for that timer: look again now.
      if (this.again) {
        this.again = false;
        this.wake(false);
      }
    });
  }

  /**
   * Set aside up to `wanted` free slots for claims made in a transaction of the caller's; none
   * when stopped. The caller ends the reservation once its transaction has ended, with what it
   * claimed (each within the reserved slots).
   */
  reserve(wanted: number): Reservation {
    const slots = this.running ? Math.max(0, Math.min(wanted, this.free)) : 0;
    this.reserved += slots;
    let ended = false;
    return {
      slots,
      end: (committed, claimed) => {
        if (ended) return;
        ended = true;
        this.reserved -= slots;
        // Claimed rows are leased to this process: started even while stopping (stop() waits for them).
        if (committed) for (const c of claimed) this.inOwnContext(() => this.launch(c));
        // Slots given back unused: work that waited for them (announced meanwhile) can have them.
        if (claimed.length < slots) this.wake(false);
      },
    };
  }

  /** Take no new work; let the calls in flight finish and settle. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    for (const unlisten of this.unlisten.splice(0)) await unlisten().catch(() => {});
    while (this.claiming || this.reserved > 0) await new Promise((resolve) => setTimeout(resolve, 10));
    await Promise.all([...this.inFlight.values()].map((w) => w.done));
  }

  private async fill(): Promise<void> {
    let sleepMs: number | undefined = POLL_MS;
    do {
      this.again = false;
      while (this.running && this.free > 0) {
        let claimed: Claimed | undefined;
        // Cleared before the claim, so work announced while it runs is not forgotten.
        this.maybeWork = false;
        // The slot is taken while its claim runs: a reservation made meanwhile must not count it free.
        this.reserved++;
        try {
          claimed = await this.options.db.fork().transactional((em) => this.options.claim(em));
        } catch (error) {
          this.log.warn({ err: errorMessage(error) }, 'could not claim analysis work; retrying');
          this.maybeWork = true;
          this.schedule(RETRY_MS);
          return;
        } finally {
          this.reserved--;
        }
        if (!claimed) {
          if (this.options.freedSlotMayUnblock) this.maybeWork = true;
          break;
        }
        this.maybeWork = true;
        this.launch(claimed);
      }
    } while (this.again && this.maybeWork && this.running && this.free > 0);
    if (!this.running) return;
    // Slots full: a freed slot wakes us. Otherwise sleep until the next delayed row, at most a poll.
    if (this.free > 0) {
      const next = await nextAvailableInMs(this.options.db.fork()).catch(() => undefined);
      if (next !== undefined) sleepMs = Math.min(POLL_MS, next + 5);
    }
    this.schedule(sleepMs);
  }

  private get free(): number {
    return this.options.slots - this.inFlight.size - this.reserved;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.wake(), ms);
    this.timer.unref();
  }

  private launch(claimed: Claimed): void {
    const abort = new AbortController();
    const done = this.options
      .work(claimed, abort.signal)
      .catch((error: unknown) => this.log.error({ documentId: claimed.documentId, err: errorMessage(error) }, 'analysis work failed unexpectedly; its lease expires and it is retried'))
      .finally(() => {
        this.inFlight.delete(claimed.documentId);
        this.wake(false);
      });
    this.inFlight.set(claimed.documentId, { abort, done });
  }
}
