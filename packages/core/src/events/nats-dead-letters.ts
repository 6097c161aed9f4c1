import { DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { replayHeaders } from './memory.ts';
import { fromNatsHeaders, payload, toNatsHeaders } from './nats-headers.ts';
import { DUE_HEADER, MESSAGE_ID_HEADER, natsToken, type NatsNames } from './nats-options.ts';
import { Headers, type DeadLetter, type ReplayOptions } from './transport.ts';

/**
 * The DLQ tools on NATS: a queue's dead letters are the messages on its subject of the `<ns>_dlq`
 * stream, read with an ordered consumer (which acks nothing, so a list leaves them in place) and
 * deleted by sequence once replayed.
 */
export class NatsDeadLetters {
  constructor(
    private readonly names: NatsNames,
    private readonly js: () => JetStreamClient,
    private readonly jsm: () => JetStreamManager,
  ) {}

  private subject(queue: string): string {
    return `${this.names.dlqPrefix}${natsToken(queue)}`;
  }

  /**
   * The messages on a queue's DLQ subject, oldest first, through an ordered consumer filtered on
   * it (2.9's message get has no next-by-subject). Its count bounds the fetch, so it never waits
   * for messages that are not there.
   */
  private async *stored(queue: string, limit: number): AsyncGenerator<JsMsg> {
    const count = Math.min(await this.depth(queue), limit);
    if (count <= 0) return;
    const consumer = await this.js().consumers.get(this.names.dlqStream, { filter_subjects: this.subject(queue), deliver_policy: DeliverPolicy.All });
    try {
      let left = count;
      while (left > 0) {
        const batch = await consumer.fetch({ max_messages: Math.min(left, 256), expires: 2_000 });
        let got = 0;
        for await (const message of batch) {
          got++;
          left--;
          yield message;
          if (left <= 0) break;
        }
        if (got === 0) return;
      }
    } finally {
      // Else it stays for the client's inactive_threshold (5 min).
      void Promise.resolve()
        .then(() => consumer.delete())
        .catch(() => {});
    }
  }

  async list(queue: string, limit: number): Promise<DeadLetter[]> {
    const result: DeadLetter[] = [];
    if (limit <= 0) return result;
    for await (const message of this.stored(queue, limit)) {
      result.push(toDeadLetter(message));
      if (result.length >= limit) break;
    }
    return result;
  }

  /** Back to the queue's retry subject, due now, with a fresh attempt count; then off the DLQ. */
  async replay(queue: string, options: ReplayOptions, publishTimeoutMs: number): Promise<number> {
    await this.jsm()
      .consumers.info(this.names.eventsStream, natsToken(queue))
      .catch((error: unknown) => {
        throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`, { cause: error });
      });
    const wanted = options.messageIds ? new Set(options.messageIds) : undefined;
    const limit = options.limit ?? Number.POSITIVE_INFINITY;
    let moved = 0;
    for await (const message of this.stored(queue, Number.POSITIVE_INFINITY)) {
      if (moved >= limit) break;
      const letter = toDeadLetter(message);
      if (wanted && (letter.messageId === undefined || !wanted.has(letter.messageId))) continue;
      const headers = { ...replayHeaders(letter.headers), [DUE_HEADER]: Date.now(), ...(letter.messageId === undefined ? {} : { [MESSAGE_ID_HEADER]: letter.messageId }) };
      await this.js().publish(`${this.names.retryPrefix}${natsToken(queue)}`, letter.body, { headers: toNatsHeaders(headers), timeout: publishTimeoutMs });
      await this.jsm().streams.deleteMessage(this.names.dlqStream, message.seq, false);
      moved++;
      options.onMoved?.();
    }
    return moved;
  }

  /** How many dead letters a queue has. */
  async depth(queue: string): Promise<number> {
    const subject = this.subject(queue);
    const info = await this.jsm().streams.info(this.names.dlqStream, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  }
}

function toDeadLetter(message: JsMsg): DeadLetter {
  const headers = fromNatsHeaders(message.headers, [MESSAGE_ID_HEADER, DUE_HEADER]);
  return {
    messageId: message.headers?.get(MESSAGE_ID_HEADER) || undefined,
    routingKey: headers[Headers.routingKey] ?? '',
    headers,
    body: payload(message.data),
  };
}
