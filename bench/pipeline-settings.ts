/**
 * bench:pipeline's settings (read once from the environment, the same for every side) and what
 * its sides share: the benchmark database, the event every side writes, the writers. The header
 * of bench/pipeline.ts lists every setting.
 */
import { createLogger } from '@tributary/core';
import { Migration, openDatabase } from '@tributary/core/db';
import type { NewEvent } from '@tributary/core/events';
import { randomBytes, randomUUID } from 'node:crypto';

export type Broker = 'rabbitmq' | 'redis' | 'nats';
export const BROKERS: readonly Broker[] = ['rabbitmq', 'redis', 'nats'];

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** Each broker's URL, as the services would be given it in `EVENT_BUS_URL`. */
export const BROKER_URLS: Record<Broker, string> = {
  rabbitmq: process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  redis: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  nats: process.env.NATS_URL ?? 'nats://127.0.0.1:4222',
};
export const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
export const RAW = Number(process.env.BENCH_RAW_MESSAGES ?? EVENTS);
export const RELAY_CONCURRENCY = Number(process.env.BENCH_RELAY_CONCURRENCY ?? 2);
export const RELAY_BATCH = Number(process.env.BENCH_RELAY_BATCH ?? 500);
// The services' default (sent rows kept 1 h, then pruned) unless told otherwise; 0 deletes each
// batch's rows in the transaction that claimed them.
export const RETAIN_SENT_MS = Number(process.env.BENCH_RETAIN_SENT_MS ?? 3_600_000);
export const CONSUMER_CONCURRENCY = Number(process.env.BENCH_CONSUMER_CONCURRENCY ?? 4);
export const MAX_BATCH = Number(process.env.BENCH_MAX_BATCH ?? 100);
export const PREFETCH = Number(process.env.BENCH_PREFETCH ?? 400);
/** Rounds of the sides, interleaved (the order rotates each round). */
export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** Writers in parallel, each publishing this many events per transaction. */
export const WRITERS = 4;
export const PER_TX = 100;
/** The raw clients' message body: 512 bytes, as raw amqplib's (bench/raw-amqp.ts). */
export const RAW_BODY_BYTES = 512;

export const logger = createLogger({ service: 'bench', level: process.env.LOG_LEVEL ?? 'warn' });

/** A namespace of its own for one run: queues, streams and keys that nothing else touches. */
export const benchNamespace = () => `bench_${randomBytes(4).toString('hex')}`;

/** What every result file records of the settings (bench/results/pipeline*.json). */
export const settings = {
  events: EVENTS,
  rawMessages: RAW,
  rounds: ROUNDS,
  relayConcurrency: RELAY_CONCURRENCY,
  relayBatch: RELAY_BATCH,
  retainSentMs: RETAIN_SENT_MS,
  consumerConcurrency: CONSUMER_CONCURRENCY,
  maxBatch: MAX_BATCH,
  prefetch: PREFETCH,
  writers: WRITERS,
  eventsPerTransaction: PER_TX,
};

class ViewTable extends Migration {
  override up(): void {
    this.addSql('create table bench_view (document_id text primary key, job_id text not null, title text not null, tenant_id text not null)');
  }
}

/** The core tables (outbox, inbox, with their NOTIFY trigger) and the view, in database `dbName`. */
export const openBenchDatabase = (dbName: string) =>
  openDatabase({ service: 'bench', target: { kind: 'postgres', url: DATABASE_URL, dbName }, entities: [], migrations: [{ name: '9000-bench-view', class: ViewTable }], logger, poolSize: 12 });

const text = 'Quarterly revenue grew while costs fell; the team shipped the new pipeline on time. '.repeat(3);
export const documentUploaded = (): NewEvent<'document.uploaded'> => {
  const documentId = randomUUID();
  return { type: 'document.uploaded', subject: documentId, tenantId: 'bench', data: { documentId, jobId: randomUUID(), title: 'Benchmark document', text, contentType: 'text/plain', uploadedAt: new Date().toISOString() } };
};

/** Run `write(n)` from WRITERS writers until EVENTS events are written; the write rate. */
export async function writeAll(write: (n: number) => Promise<void>): Promise<number> {
  const started = performance.now();
  let written = 0;
  const writer = async () => {
    while (written < EVENTS) {
      const n = Math.min(PER_TX, EVENTS - written);
      written += n;
      await write(n);
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, writer));
  return EVENTS / ((performance.now() - started) / 1000);
}

/** How the raw clients batch: what bench:pipeline gives its own relay and consumer, given to them too. */
export interface RawBatching {
  /** Messages per publish batch (the relay's batch size). */
  batch: number;
  /** Publish batches in flight at once (the relay's concurrency). */
  concurrency: number;
  /** Messages a consumer may hold unacknowledged (the consumer's prefetch). */
  prefetch: number;
}

/** What one run of the pipeline or the floor measured. */
export interface Measured {
  /** Events/s end to end. */
  rate: number;
  /** Outbox writes alone, events/s. */
  writeRate: number;
}

/** What each run still has to delete if the benchmark is interrupted (Ctrl-C) before it does so itself. */
const leftovers = new Set<() => Promise<void>>();

/** Remember `cleanup` until the returned function is called (the run cleaned up itself). */
export function onInterruptDelete(cleanup: () => Promise<void>): () => void {
  leftovers.add(cleanup);
  return () => leftovers.delete(cleanup);
}

/** Run every pending clean-up (on SIGINT/SIGTERM, bench/results.ts `onInterrupt`); the problems they met. */
export async function deleteLeftovers(): Promise<string[]> {
  const problems: string[] = [];
  for (const cleanup of [...leftovers]) await cleanup().catch((error: unknown) => problems.push(String(error)));
  leftovers.clear();
  return problems;
}
