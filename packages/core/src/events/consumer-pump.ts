import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import type { Delivery } from './transport.ts';

/** How long deliveries may wait for a fuller batch while other transactions are in flight. */
const GATHER_MS = 10;

export interface DeliveryPumpOptions {
  /** Unacked deliveries the consumer holds at once. */
  prefetch: number;
  /** Deliveries in one batch at most. */
  maxBatch: number;
  /** Batches in flight at once. */
  concurrency: number;
  /** Hold partial batches back while others are in flight (batch handlers, where batching pays). */
  gather: boolean;
  log: Logger;
  /** Applies a batch and settles its deliveries. */
  process: (batch: Delivery[]) => Promise<void>;
}

/**
 * A consumer's batching pump: it holds the deliveries received, starts batches of them while a
 * transaction slot is free, and hands deliveries deferred for later back to the line.
 */
export class DeliveryPump {
  private readonly maxBatch: number;
  /** A batch worth a transaction of its own while others are in flight: maxBatch, or the prefetch's share. */
  private readonly fullBatch: number;
  /** Hold partial batches back while others are in flight (batch handlers, where batching pays). */
  private readonly gather: boolean;
  private pumpScheduled = false;
  private gatherTimer: NodeJS.Timeout | undefined;
  private readonly concurrency: number;
  private readonly log: Logger;
  private readonly waiting: Delivery[] = [];
  /** Batches being applied now (backlog metrics). */
  private readonly processing = new Set<Delivery[]>();
  private active = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private stopping = false;
  /** Receiving but starting nothing (a late joiner applying the log's history first). */
  private paused = false;
  /** Deliveries a staged handler handed back for later, by their timers (unacked meanwhile). */
  private readonly deferred = new Map<NodeJS.Timeout, Delivery>();

  constructor(private readonly options: DeliveryPumpOptions) {
    this.maxBatch = options.maxBatch;
    this.concurrency = options.concurrency;
    this.fullBatch = Math.max(1, Math.min(this.maxBatch, Math.floor(options.prefetch / this.concurrency)));
    this.gather = options.gather;
    this.log = options.log;
  }

  /** Start batches again (the consumer starts). */
  open(): void {
    this.stopping = false;
  }

  /**
   * Keep what arrives, start nothing: the deliveries wait unacked (at most the prefetch; the
   * broker keeps the rest in the queue) until {@link resume}.
   */
  pause(): void {
    this.paused = true;
  }

  /** Start batches again after {@link pause}, beginning with what waited meanwhile. */
  resume(): void {
    this.paused = false;
    this.pump(true);
  }

  /** A delivery from the transport. */
  receive(delivery: Delivery): void {
    this.waiting.push(delivery);
    if (this.paused) return;
    if (!this.gather) return this.pump(true);
    // Deliveries come in bursts (one socket read holds many): gather the burst, then pump.
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump(false);
    });
  }

  /** Start no more batches (the consumer stops). */
  halt(): void {
    this.stopping = true;
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
  }

  /** Once halted: finish the batches in flight, then drop what was received but not started. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all(this.inFlight);
    this.waiting.length = 0;
    for (const timer of this.deferred.keys()) clearTimeout(timer);
    this.deferred.clear();
  }

  /** Every delivery held unsettled: waiting, handed back for later, or being applied. */
  *held(): Generator<Delivery> {
    yield* this.waiting;
    yield* this.deferred.values();
    for (const batch of this.processing) yield* batch;
  }

  /**
   * Start batches while a transaction slot is free. A per-event handler's consumer starts
   * whatever waits at once. A batch handler's consumer does too when nothing is in flight
   * (latency); while transactions are busy, it starts one with a full batch, or with what
   * gathered after {@link GATHER_MS} (`force`): under load a trickle of deliveries, or the rest
   * a full batch left behind, must not become a row of one-event transactions, each as dear as
   * a full one, and a slow handler must not hold the next events back for long either.
   */
  private pump(force: boolean): void {
    let partialOk = force;
    while (!this.stopping && !this.paused && this.active < this.concurrency && this.waiting.length > 0) {
      if (this.gather && this.active > 0 && !partialOk && this.waiting.length < this.fullBatch) {
        this.gatherTimer ??= setTimeout(() => {
          this.gatherTimer = undefined;
          this.pump(true);
        }, GATHER_MS);
        return;
      }
      partialOk = !this.gather;
      const batch = this.waiting.splice(0, this.maxBatch);
      this.active++;
      this.processing.add(batch);
      const work = this.options
        .process(batch)
        .catch((error) => this.log.error({ err: errorMessage(error) }, 'batch settlement failed; the broker will redeliver'))
        .finally(() => {
          this.processing.delete(batch);
          this.active--;
          this.inFlight.delete(work);
          this.pump(!this.gather);
        });
      this.inFlight.add(work);
    }
  }

  /** Hand a delivery back to the queue of waiting ones after `ms`, still unacked. */
  defer(delivery: Delivery, ms: number): void {
    const timer = setTimeout(() => {
      this.deferred.delete(timer);
      if (this.stopping) return;
      this.waiting.unshift(delivery);
      this.pump(true);
    }, Math.max(0, ms));
    this.deferred.set(timer, delivery);
  }
}
