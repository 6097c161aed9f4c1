import { parse } from '@tributary/contracts';
import type { Logger } from 'pino';
import { metrics, watchConsumer } from '../metrics.ts';
import { CoreErrorCode, errorCode, errorMessage, TributaryError } from '../errors.ts';
import { catchUpWithRetries } from './consumer-catch-up.ts';
import { DEFAULT_CONCURRENCY, DEFAULT_MAX_BATCH, DEFAULT_PREFETCH, type EventConsumerOptions } from './consumer-options.ts';
import { fail } from './consumer-failure.ts';
import { applyInInbox } from './consumer-inbox.ts';
import { DeliveryPump } from './consumer-pump.ts';
import type { ConsumerScope, Item } from './consumer-scope.ts';
import { processStaged } from './consumer-staged.ts';
import { Headers, queueName, type ConsumerHandle, type Delivery } from './transport.ts';

export {
  DEFAULT_CONCURRENCY,
  DEFAULT_MAX_BATCH,
  DEFAULT_PREFETCH,
  type BatchEventHandler,
  type EventConsumerHandler,
  type EventConsumerOptions,
  type EventConsumerSettings,
  type EventHandler,
  type HandlerContext,
  type StagedEventHandler,
  type StagedHandlerContext,
  type TransactionContext,
} from './consumer-options.ts';

/**
 * The consumer base: every delivery is parsed by its contract (a violation goes to the DLQ at
 * once), then applied in a transaction that also inserts (consumer, event id) into the inbox;
 * only after the commit is it acked. A duplicate, whether redelivered or delivered concurrently
 * to a second consumer, hits the inbox's unique key and is acked without a second effect.
 * Failures go through the retry tiers with growing delays, up to `maxAttempts`, then to the DLQ
 * with the error in its headers; an {@link UnrecoverableError} goes there at once.
 *
 * Deliveries waiting together are applied in one transaction (up to `maxBatch`). If that
 * transaction fails, each event is applied again on its own, so one poison event never
 * holds back the others.
 *
 * A {@link StagedEventHandler} gets no transaction around it: it opens short ones itself and
 * records the event in the inbox with its final one (`settle`), so long work between them
 * holds no database connection. It is acked after it returns.
 *
 * Its parts: the handler types and options (`consumer-options.ts`), the batching pump
 * (`consumer-pump.ts`), the inbox transaction (`consumer-inbox.ts`), the staged handler's path
 * (`consumer-staged.ts`) and the retry tiers and DLQ (`consumer-failure.ts`).
 */
export class EventConsumer {
  readonly queue: string;
  readonly retryDelaysMs: readonly number[];
  private readonly prefetch: number;
  private readonly log: Logger;
  private readonly scope: ConsumerScope;
  private readonly pump: DeliveryPump;
  private handle: ConsumerHandle | undefined;
  /** The history being applied (`startFrom`), and how to stop it. */
  private history: { done: Promise<void>; abort: AbortController } | undefined;

  constructor(private readonly options: EventConsumerOptions) {
    this.queue = queueName(options.transport.namespace, options.service, options.name);
    this.prefetch = options.prefetch ?? DEFAULT_PREFETCH;
    this.retryDelaysMs = options.retryDelaysMs ?? [1_000, 5_000, 30_000, 120_000];
    this.log = options.logger.child({ component: 'consumer', queue: this.queue });
    this.scope = {
      options,
      queue: this.queue,
      consumerKey: `${options.service}.${options.name}`,
      maxAttempts: options.maxAttempts ?? 5,
      log: this.log,
      labels: { service: options.service, consumer: options.name },
    };
    this.pump = new DeliveryPump({
      prefetch: this.prefetch,
      maxBatch: options.stagedHandler ? 1 : (options.maxBatch ?? DEFAULT_MAX_BATCH),
      concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
      gather: options.batchHandler !== undefined,
      log: this.log,
      process: (batch) => this.processBatch(batch),
    });
  }

  /**
   * Declare and bind the queue and start receiving. With `startFrom`, the deliveries are held
   * while the log's history is applied in the background (see {@link caughtUp}): binding first
   * means everything published from now on waits in the queue, so there is no gap between the
   * history and the live part, and what both carry is dropped by the inbox.
   *
   * @throws TributaryError `EVENT_LOG_DISABLED` with `startFrom` and no log on the transport;
   *   `HISTORY_UNSUPPORTED` with `startFrom` and a staged handler.
   */
  async start(): Promise<void> {
    const { startFrom, transport } = this.options;
    if (startFrom !== undefined && !transport.log) {
      throw new TributaryError(CoreErrorCode.EVENT_LOG_DISABLED, `${this.scope.consumerKey} starts from the event log's history (startFrom), but the transport keeps no log`);
    }
    // A staged handler calls a model per event: replaying years of them is a bill, not a view.
    if (startFrom !== undefined && this.options.stagedHandler) {
      throw new TributaryError(CoreErrorCode.HISTORY_UNSUPPORTED, `${this.scope.consumerKey}: a staged handler cannot start from history (startFrom)`);
    }
    this.pump.open();
    if (startFrom !== undefined) this.pump.pause();
    const spec = {
      queue: this.queue,
      bindings: this.options.types,
      prefetch: this.prefetch,
      retryDelaysMs: this.retryDelaysMs,
      ...(this.options.exclusive ? { exclusive: true } : {}),
    };
    // Stays watched after stop(): a stopped consumer's backlog is the one worth seeing.
    watchConsumer(this.options.service, this.options.name, () => this.backlog());
    this.handle = await this.options.transport.consume(spec, (delivery) => this.pump.receive(delivery));
    if (startFrom !== undefined && transport.log) {
      const abort = new AbortController();
      const done = catchUpWithRetries(this.scope, transport.log, startFrom, abort.signal).then(() => {
        if (!abort.signal.aborted) this.pump.resume();
      });
      this.history = { done, abort };
    }
  }

  /**
   * Resolves once the consumer is live: at once without `startFrom`; with it, once the history
   * is applied and the deliveries held meanwhile are being processed (or the consumer stopped).
   */
  async caughtUp(): Promise<void> {
    await this.history?.done;
  }

  /**
   * Graceful stop: no new deliveries, finish the transactions in flight, and hand back what was
   * received but not started (the broker redelivers it to another consumer).
   */
  async stop(): Promise<void> {
    // The history's batch in flight commits with its checkpoint; the next start resumes after it.
    this.history?.abort.abort();
    await this.history?.done;
    this.history = undefined;
    this.pump.halt();
    await this.handle?.cancel();
    await this.pump.drain();
    await this.handle?.close();
    this.handle = undefined;
  }

  /**
   * The backlog as `/metrics` shows it: events ready in the queue plus those this consumer holds
   * unsettled, and the age of the oldest event it holds (the head of the queue, which is FIFO),
   * from the time its producer wrote it to the outbox.
   */
  async backlog(): Promise<{ depth: number; oldestAgeSeconds: number }> {
    if (!this.options.transport.isReady()) throw new Error(`${this.queue}: transport not ready`);
    const ready = await this.options.transport.queueDepth(this.queue);
    let held = 0;
    let oldest = Number.POSITIVE_INFINITY;
    for (const delivery of this.pump.held()) {
      held++;
      const time = delivery.headers[Headers.time];
      if (typeof time === 'number' && time < oldest) oldest = time;
    }
    return { depth: ready + held, oldestAgeSeconds: Number.isFinite(oldest) ? Math.max(0, (Date.now() - oldest) / 1000) : 0 };
  }

  private async processBatch(deliveries: Delivery[]): Promise<void> {
    const items: Item[] = [];
    for (const delivery of deliveries) {
      try {
        // A string, so the parser does not copy the buffer before decoding it.
        items.push({ delivery, event: parse(delivery.body.toString('utf8')) });
      } catch (error) {
        // The same bytes will never parse: no retry.
        this.log.warn({ messageId: delivery.messageId, code: errorCode(error), err: errorMessage(error) }, 'event violates its contract; dead-lettered');
        metrics.eventsDeadLettered.inc({ ...this.scope.labels, type: delivery.routingKey, code: errorCode(error) });
        await delivery.deadLetter({ code: errorCode(error), message: errorMessage(error) });
      }
    }
    if (this.options.relevant && items.length > 0) {
      const kept: Item[] = [];
      for (const item of items) {
        let relevant: boolean;
        try {
          relevant = await this.options.relevant(item.event, this.options.db.fork());
        } catch (error) {
          await fail(this.scope, item, error);
          continue;
        }
        if (relevant) {
          kept.push(item);
          continue;
        }
        metrics.eventsConsumed.inc({ ...this.scope.labels, type: item.event.type, outcome: 'irrelevant' });
        await item.delivery.ack();
      }
      items.splice(0, items.length, ...kept);
    }
    if (items.length === 0) return;
    if (this.options.stagedHandler) {
      for (const item of items) await processStaged(this.scope, item, (delivery, ms) => this.pump.defer(delivery, ms));
      return;
    }
    if (items.length === 1) return this.processOne(items[0]!);
    try {
      await applyInInbox(this.scope, items);
    } catch {
      // Find the culprit: each event alone, in its own transaction.
      for (const item of items) await this.processOne(item);
      return;
    }
    await Promise.all(items.map((item) => item.delivery.ack()));
  }

  private async processOne(item: Item): Promise<void> {
    try {
      await applyInInbox(this.scope, [item]);
    } catch (error) {
      await fail(this.scope, item, error);
      return;
    }
    await item.delivery.ack();
  }
}
