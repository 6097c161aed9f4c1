import type { ConfirmChannel } from 'amqplib';
import { CoreErrorCode, TributaryError } from '../errors.ts';
import { replayHeaders } from './memory.ts';
import { confirmAll, publishOptions } from './rabbitmq-publish.ts';
import { deadLetterQueueName, Headers, type DeadLetter, type ReplayOptions } from './transport.ts';

/** Up to `limit` dead letters of `queue`, read on `channel` and left in place once it closes. */
export async function listDeadLetters(channel: ConfirmChannel, queue: string, limit: number): Promise<DeadLetter[]> {
  const result: DeadLetter[] = [];
  // Messages taken with get() stay unacked until the channel closes, which puts them back:
  // a read that leaves the DLQ as it was.
  while (result.length < limit) {
    const message = await channel.get(deadLetterQueueName(queue), { noAck: false });
    if (!message) break;
    result.push({
      messageId: message.properties.messageId as string | undefined,
      routingKey: String((message.properties.headers ?? {})[Headers.routingKey] ?? message.fields.routingKey),
      headers: { ...(message.properties.headers ?? {}) },
      body: message.content,
    });
  }
  return result;
}

/** Move dead letters of `queue` back to it with confirms, on `channel`; those not wanted go back when it closes. */
export async function replayDeadLetters(channel: ConfirmChannel, queue: string, options: ReplayOptions, publishTimeoutMs: number): Promise<number> {
  const wanted = options.messageIds ? new Set(options.messageIds) : undefined;
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  await channel.checkQueue(queue).catch((error: unknown) => {
    throw new TributaryError(CoreErrorCode.QUEUE_NOT_FOUND, `queue ${queue} does not exist`, { cause: error });
  });
  let moved = 0;
  while (moved < limit) {
    const message = await channel.get(deadLetterQueueName(queue), { noAck: false });
    if (!message) break;
    const id = message.properties.messageId as string | undefined;
    if (wanted && (id === undefined || !wanted.has(id))) continue; // left unacked: back on close
    const headers = replayHeaders({ ...(message.properties.headers ?? {}) }) as Record<string, string | number>;
    await confirmAll(channel, [message], publishTimeoutMs, (m, callback) =>
      channel.sendToQueue(queue, m.content, publishOptions({ messageId: id, headers }, false), callback),
    );
    channel.ack(message);
    moved++;
    options.onMoved?.();
  }
  return moved;
}
