import type { Channel, ConsumeMessage } from 'amqplib';
import { attemptOf, deadLetterQueueName, failureHeaders, Headers, retryQueueName, type Delivery, type FailureInfo, type QueueSpec } from './transport.ts';

/** Sends a message straight to a queue with confirms: the transport, for a delivery's retry and dead-letter copies. */
export interface QueueSender {
  sendToQueue(queue: string, message: { body: Buffer; messageId: string | undefined; headers: Record<string, unknown> }): Promise<void>;
}

/**
 * Acks a channel's deliveries with one `basic.ack(multiple)` per contiguous run of settled
 * delivery tags instead of one frame (and one socket write) per message. Tags grow
 * monotonically per channel, so a delivery still being handled holds back only the acks
 * of later ones, for as long as it takes.
 */
export class AckCoalescer {
  private readonly outstanding: ConsumeMessage[] = [];
  private head = 0;
  private readonly settled = new Set<number>();
  private scheduled = false;

  constructor(private readonly channel: Channel) {}

  track(message: ConsumeMessage): void {
    this.outstanding.push(message);
  }

  ack(message: ConsumeMessage): void {
    this.settled.add(message.fields.deliveryTag);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    let last: ConsumeMessage | undefined;
    while (this.head < this.outstanding.length && this.settled.delete(this.outstanding[this.head]!.fields.deliveryTag)) {
      last = this.outstanding[this.head++];
    }
    if (this.head > 1024) {
      this.outstanding.splice(0, this.head);
      this.head = 0;
    }
    if (!last) return;
    // If the channel died meanwhile the broker redelivers; the inbox makes that harmless.
    try {
      this.channel.ack(last, true);
    } catch {
      /* channel closed: redelivery follows */
    }
  }
}

/**
 * One delivery. A class, not an object of closures: a consumer creates one per message, and four
 * closures each (with the name-keeping wrapper tsx adds to every function) cost more than the
 * rest of the hand-off.
 */
export class RabbitMqDelivery implements Delivery {
  readonly body: Buffer;
  readonly messageId: string | undefined;
  readonly routingKey: string;
  readonly headers: Record<string, unknown>;
  readonly attempt: number;
  readonly redelivered: boolean;
  private settled = false;

  constructor(
    private readonly transport: QueueSender,
    private readonly acks: AckCoalescer,
    private readonly spec: QueueSpec,
    private readonly message: ConsumeMessage,
  ) {
    const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
    const original = headers[Headers.routingKey];
    this.body = message.content;
    this.messageId = message.properties.messageId as string | undefined;
    this.routingKey = typeof original === 'string' ? original : message.fields.routingKey;
    this.headers = headers;
    this.attempt = attemptOf(headers);
    this.redelivered = message.fields.redelivered;
  }

  async ack(): Promise<void> {
    if (this.settled) return;
    this.settled = true;
    this.acks.ack(this.message);
  }

  retry(tier: number, failure: FailureInfo): Promise<void> {
    const tiers = this.spec.retryDelaysMs.length;
    if (tiers === 0) return this.forward(this.spec.queue, failure);
    return this.forward(retryQueueName(this.spec.queue, Math.min(Math.max(tier, 0), tiers - 1)), failure);
  }

  deadLetter(failure: FailureInfo): Promise<void> {
    return this.forward(deadLetterQueueName(this.spec.queue), failure);
  }

  private async forward(queue: string, failure: FailureInfo): Promise<void> {
    if (this.settled) return;
    await this.transport.sendToQueue(queue, {
      body: this.body,
      messageId: this.messageId,
      headers: { ...this.headers, ...failureHeaders(this.spec.queue, this.routingKey, this.attempt, failure) },
    });
    await this.ack();
  }
}
