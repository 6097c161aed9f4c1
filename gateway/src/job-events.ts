import { parseEnvelope, validateData, type Envelope, type JobUpdated } from '@tributary/contracts';
import { errorCode, errorMessage, type Logger } from '@tributary/core';
import { queueName, type ConsumerHandle, type Transport } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';

export interface JobEvent {
  tenantId: string;
  job: JobUpdated;
  /** The event's trace: the subscription message continues it. */
  traceparent: string | undefined;
}

type Listener = (event: JobEvent) => void;

export interface JobEventHubOptions {
  instanceId?: string;
  /** More event types to receive (the cache's invalidating events). */
  bindings?: readonly string[];
  /**
   * Sees every event first, before any subscription hears of it: a subscriber that reads after
   * its message never meets a cached result the event made stale.
   */
  onEvent?: (event: Envelope) => void;
  /** This instance's queue was re-created (broker connection lost): events may have been missed. */
  onResubscribed?: () => void;
}

/**
 * Delivers `job.updated` events to the subscriptions of this gateway instance. Each instance
 * has its own exclusive, auto-delete queue, so every replica sees every job event and serves
 * its own clients. The gateway keeps no state worth retrying for, so events are acked at once.
 */
export class JobEventHub {
  readonly queue: string;
  private readonly listeners = new Map<string, Set<Listener>>();
  /** The latest event per job, for the most recent jobs: lets a late subscriber's message join its trace. */
  private readonly recent = new Map<string, JobEvent>();
  private static readonly RECENT_LIMIT = 10_000;
  private handle: ConsumerHandle | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly logger: Logger,
    private readonly options: JobEventHubOptions = {},
  ) {
    this.queue = queueName(transport.namespace, 'gateway', options.instanceId ?? randomUUID());
  }

  async start(): Promise<void> {
    this.handle = await this.transport.consume(
      { queue: this.queue, bindings: [...new Set(['job.updated', ...(this.options.bindings ?? [])])], prefetch: 1_000, retryDelaysMs: [], exclusive: true, ...(this.options.onResubscribed ? { onResubscribed: this.options.onResubscribed } : {}) },
      (delivery) => {
        const refuse = (error: unknown) => {
          this.logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'event violates its contract; dropped');
          void delivery.deadLetter({ code: errorCode(error), message: errorMessage(error) });
        };
        let event: Envelope;
        try {
          event = parseEnvelope(delivery.body);
        } catch (error) {
          refuse(error);
          return;
        }
        // Even an event whose data is unreadable is shown to onEvent: the cache then drops the tenant's results.
        this.options.onEvent?.(event);
        if (event.dataschema !== 'job.updated/v1') {
          void delivery.ack();
          return;
        }
        let job: JobUpdated;
        try {
          job = validateData('job.updated/v1', event.data);
        } catch (error) {
          refuse(error);
          return;
        }
        void delivery.ack();
        const jobEvent: JobEvent = { tenantId: event.tenantid, job, traceparent: event.traceparent };
        this.remember(jobEvent);
        const listeners = this.listeners.get(job.jobId);
        if (!listeners) return;
        for (const listener of listeners) listener(jobEvent);
      },
    );
  }

  private remember(event: JobEvent): void {
    const jobId = event.job.jobId;
    const known = this.recent.get(jobId);
    // Out-of-order delivery must not replace a later state with an earlier one.
    if (known && known.job.updatedAt > event.job.updatedAt) return;
    this.recent.delete(jobId);
    this.recent.set(jobId, event);
    if (this.recent.size > JobEventHub.RECENT_LIMIT) this.recent.delete(this.recent.keys().next().value!);
  }

  /** The latest event this instance saw for a job of this tenant, if it is recent. */
  latest(jobId: string, tenantId: string): JobEvent | undefined {
    const event = this.recent.get(jobId);
    return event && event.tenantId === tenantId ? event : undefined;
  }

  /** Listen to one job's events; returns the function that stops listening. */
  listen(jobId: string, listener: Listener): () => void {
    let set = this.listeners.get(jobId);
    if (!set) {
      set = new Set();
      this.listeners.set(jobId, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(jobId);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) this.listeners.delete(jobId);
    };
  }

  /** Jobs with at least one listener (metrics, tests). */
  get size(): number {
    return this.listeners.size;
  }

  async stop(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }
}
