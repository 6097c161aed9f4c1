import { parse, type JobUpdated } from '@tributary/contracts';
import { errorCode, errorMessage, type Logger } from '@tributary/core';
import { queueName, type ConsumerHandle, type Transport } from '@tributary/core/events';
import { randomUUID } from 'node:crypto';

export interface JobEvent {
  tenantId: string;
  job: JobUpdated;
}

type Listener = (event: JobEvent) => void;

/**
 * Delivers `job.updated` events to the subscriptions of this gateway instance. Each instance
 * has its own exclusive, auto-delete queue, so every replica sees every job event and serves
 * its own clients. The gateway keeps no state worth retrying for, so events are acked at once.
 */
export class JobEventHub {
  readonly queue: string;
  private readonly listeners = new Map<string, Set<Listener>>();
  private handle: ConsumerHandle | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly logger: Logger,
    instanceId: string = randomUUID(),
  ) {
    this.queue = queueName(transport.namespace, 'gateway', instanceId);
  }

  async start(): Promise<void> {
    this.handle = await this.transport.consume(
      { queue: this.queue, bindings: ['job.updated'], prefetch: 1_000, retryDelaysMs: [], exclusive: true },
      (delivery) => {
        let event;
        try {
          event = parse(delivery.body);
        } catch (error) {
          this.logger.warn({ code: errorCode(error), err: errorMessage(error) }, 'job event violates its contract; dropped');
          void delivery.deadLetter({ code: errorCode(error), message: errorMessage(error) });
          return;
        }
        void delivery.ack();
        if (event.dataschema !== 'job.updated/v1') return;
        const listeners = this.listeners.get(event.data.jobId);
        if (!listeners) return;
        const jobEvent: JobEvent = { tenantId: event.tenantid, job: event.data };
        for (const listener of listeners) listener(jobEvent);
      },
    );
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
