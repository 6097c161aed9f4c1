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
}

/**
 * One analysis process's call slots. Whenever a slot is free it claims the next document from
 * the work table, one claim at a time, until the slots are full or nothing is claimable; then
 * it sleeps until work arrives (the table's trigger notifies every process on commit; an
 * enqueue in this process wakes it directly), a slot frees, a delayed row becomes claimable, or
 * the poll. So an idle deployment starts a new document as soon as its enqueue commits, with no
 * polling interval added.
 */
export class AnalysisScheduler implements ServiceWorker {
  private running = false;
  private claiming = false;
  private again = false;
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

  /** Claim now if a slot is free (work arrived, or a slot freed). */
  wake(): void {
    if (!this.running) return;
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
        this.wake();
      }
    });
  }

  /** Take no new work; let the calls in flight finish and settle. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    for (const unlisten of this.unlisten.splice(0)) await unlisten().catch(() => {});
    while (this.claiming) await new Promise((resolve) => setTimeout(resolve, 10));
    await Promise.all([...this.inFlight.values()].map((w) => w.done));
  }

  private async fill(): Promise<void> {
    let sleepMs: number | undefined = POLL_MS;
    do {
      this.again = false;
      while (this.running && this.inFlight.size < this.options.slots) {
        let claimed: Claimed | undefined;
        try {
          claimed = await this.options.db.fork().transactional((em) => this.options.claim(em));
        } catch (error) {
          this.log.warn({ err: errorMessage(error) }, 'could not claim analysis work; retrying');
          this.schedule(RETRY_MS);
          return;
        }
        if (!claimed) break;
        this.launch(claimed);
      }
    } while (this.again && this.running && this.inFlight.size < this.options.slots);
    if (!this.running) return;
    // Slots full: a freed slot wakes us. Otherwise sleep until the next delayed row, at most a poll.
    if (this.inFlight.size < this.options.slots) {
      const next = await nextAvailableInMs(this.options.db.fork()).catch(() => undefined);
      if (next !== undefined) sleepMs = Math.min(POLL_MS, next + 5);
    }
    this.schedule(sleepMs);
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
        this.wake();
      });
    this.inFlight.set(claimed.documentId, { abort, done });
  }
}
