import type { JsMsg } from '@nats-io/jetstream';
import { attemptOf, failureHeaders, type Delivery, type FailureInfo, type QueueSpec } from './transport.ts';
import { DUE_HEADER, MESSAGE_ID_HEADER } from './nats-options.ts';

/** What a delivery needs from its queue. */
export interface DeliveryOwner {
  readonly spec: QueueSpec;
  /** Publish a copy to the queue's retry subject, due at `due`. */
  toRetry(body: Buffer, headers: Record<string, unknown>, due: number): Promise<void>;
  /** Publish a copy to the queue's dead-letter subject. */
  toDeadLetters(body: Buffer, headers: Record<string, unknown>): Promise<void>;
  /** The delivery is settled: it no longer counts against the prefetch. */
  settled(message: JsMsg): void;
}

/** One JetStream message handed to a consumer's handler. */
export class NatsDelivery implements Delivery {
  readonly attempt: number;
  private done = false;

  constructor(
    private readonly owner: DeliveryOwner,
    private readonly message: JsMsg,
    readonly body: Buffer,
    readonly messageId: string | undefined,
    readonly routingKey: string,
    readonly headers: Readonly<Record<string, unknown>>,
    readonly redelivered: boolean,
  ) {
    this.attempt = attemptOf(headers);
  }

  async ack(): Promise<void> {
    if (this.done) return;
    this.done = true;
    // Fire and forget, like a RabbitMQ ack: if it is lost JetStream redelivers after ack_wait, and the inbox makes that harmless.
    this.message.ack();
    this.owner.settled(this.message);
  }

  async retry(tier: number, failure: FailureInfo): Promise<void> {
    if (this.done) return;
    const delays = this.owner.spec.retryDelaysMs;
    const delay = delays.length === 0 ? 0 : delays[Math.min(Math.max(tier, 0), delays.length - 1)]!;
    await this.owner.toRetry(this.body, this.copyHeaders(failure), Date.now() + delay);
    await this.ack();
  }

  async deadLetter(failure: FailureInfo): Promise<void> {
    if (this.done) return;
    await this.owner.toDeadLetters(this.body, this.copyHeaders(failure));
    await this.ack();
  }

  /**
   * Give it back (a closing consumer). Delayed past the life of the pull requests the stopped
   * consumer still has out: handed to one of those, it would come back with its delivery count
   * lowered again, and the next consumer could not tell it was redelivered.
   */
  release(delayMs: number): void {
    if (this.done) return;
    this.done = true;
    this.message.nak(delayMs);
    this.owner.settled(this.message);
  }

  private copyHeaders(failure: FailureInfo): Record<string, unknown> {
    const { [DUE_HEADER]: _due, ...rest } = this.headers;
    return {
      ...rest,
      ...failureHeaders(this.owner.spec.queue, this.routingKey, this.attempt, failure),
      ...(this.messageId === undefined ? {} : { [MESSAGE_ID_HEADER]: this.messageId }),
    };
  }
}
