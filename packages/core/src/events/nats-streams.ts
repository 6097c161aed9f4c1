import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import type { NatsLogOptions, NatsNames } from './nats-options.ts';

/** JetStream's default duplicate window; it may not be longer than the stream's max_age. */
const DUPLICATE_WINDOW_MS = 120_000;
/** "stream name already in use with a different configuration". */
const STREAM_NAME_EXISTS = 10058;

/**
 * The events stream. With the log on it IS the log (offset = stream sequence): `limits`
 * retention, discarding the oldest past max_age/max_bytes. A durable consumer that lags past
 * retention loses what was discarded (its next delivery is the oldest still kept), as a
 * RabbitMQ queue never would: size the retention above the longest outage a consumer may have.
 * With the log off: `interest` retention, a message goes once every consumer acked it.
 */
export function eventsStreamConfig(names: NatsNames, log: NatsLogOptions | false): Partial<StreamConfig> & { name: string } {
  const base = { name: names.eventsStream, subjects: [`${names.eventPrefix}>`], storage: StorageType.File };
  if (log === false) return { ...base, retention: RetentionPolicy.Interest };
  const maxAge = log.maxAgeMs ?? 0;
  return {
    ...base,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(maxAge),
    max_bytes: log.maxBytes ?? -1,
    max_msgs: log.maxMessages ?? -1,
    duplicate_window: nanos(maxAge > 0 ? Math.min(maxAge, DUPLICATE_WINDOW_MS) : DUPLICATE_WINDOW_MS),
  };
}

/** Retry copies: a work queue, each message gone once its queue's retry consumer acked it. */
export const retryStreamConfig = (names: NatsNames): Partial<StreamConfig> & { name: string } => ({
  name: names.retryStream,
  subjects: [`${names.retryPrefix}>`],
  storage: StorageType.File,
  retention: RetentionPolicy.Workqueue,
});

/** Dead letters: kept until replayed or deleted by the tools. */
export const dlqStreamConfig = (names: NatsNames): Partial<StreamConfig> & { name: string } => ({
  name: names.dlqStream,
  subjects: [`${names.dlqPrefix}>`],
  storage: StorageType.File,
  retention: RetentionPolicy.Limits,
});

/**
 * Create a stream, or keep the one another process created with other settings (a different
 * `EVENT_LOG_RETENTION`, the log on in one and off in the other) and say so: change a live
 * stream's limits with `nats stream edit`; its retention policy cannot change.
 */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }, logger: Logger): Promise<void> {
  try {
    await jsm.streams.add(config);
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== STREAM_NAME_EXISTS) throw error;
    logger.warn({ stream: config.name, wanted: config, err: errorMessage(error) }, 'the stream exists with other settings: keeping it as it is');
  }
}
