import type { RedisConsumer } from './redis-consumer.ts';
import { parseHeaders, type StreamFields } from './redis-options.ts';
import { attemptOf, failureHeaders, Headers, type Delivery, type FailureInfo } from './transport.ts';

/** One delivery of a queue entry; its consumer settles it (acks coalesced, a retry or dead-letter copy in the same MULTI as its ack). */
export class RedisDelivery implements Delivery {
  readonly body: Buffer;
  readonly messageId: string | undefined;
  readonly routingKey: string;
  readonly headers: Record<string, unknown>;
  readonly attempt: number;
  private settledAlready = false;

  constructor(
    private readonly consumer: RedisConsumer,
    private readonly entryId: string,
    private readonly fields: StreamFields,
    readonly redelivered: boolean,
  ) {
    this.headers = parseHeaders(fields.headers);
    const original = this.headers[Headers.routingKey];
    this.body = fields.body;
    this.messageId = fields.id === '' ? undefined : fields.id;
    this.routingKey = typeof original === 'string' ? original : fields.key;
    this.attempt = attemptOf(this.headers);
  }

  async ack(): Promise<void> {
    if (this.settledAlready) return;
    this.settledAlready = true;
    await this.consumer.settle(this.entryId);
  }

  async retry(tier: number, failure: FailureInfo): Promise<void> {
    if (this.settledAlready) return;
    this.settledAlready = true;
    const { spec, keys } = this.consumer;
    const headers = this.copyHeaders(failure);
    const tiers = spec.retryDelaysMs.length;
    if (tiers === 0) {
      await this.consumer.settle(this.entryId, (m) => m.xadd(keys.queue(spec.queue), '*', 'id', this.fields.id, 'key', this.fields.key, 'headers', headers, 'body', this.body));
      return;
    }
    const delay = spec.retryDelaysMs[Math.min(Math.max(tier, 0), tiers - 1)]!;
    // The member carries the entry id, unique in its stream, so two copies never collapse.
    const meta = Buffer.from(`${JSON.stringify([this.entryId, this.fields.id, this.fields.key, headers])}\n`);
    await this.consumer.settle(this.entryId, (m) => m.zadd(keys.delayed(spec.queue), Date.now() + delay, Buffer.concat([meta, this.body])));
  }

  async deadLetter(failure: FailureInfo): Promise<void> {
    if (this.settledAlready) return;
    this.settledAlready = true;
    const { spec, keys } = this.consumer;
    const headers = this.copyHeaders(failure);
    await this.consumer.settle(this.entryId, (m) => m.xadd(keys.dlq(spec.queue), '*', 'id', this.fields.id, 'key', this.fields.key, 'headers', headers, 'body', this.body));
  }

  private copyHeaders(failure: FailureInfo): string {
    return JSON.stringify({ ...this.headers, ...failureHeaders(this.consumer.spec.queue, this.routingKey, this.attempt, failure) });
  }
}
