import client from 'prom-client';
import type { Database } from './db/index.ts';
import type { EventLog, LogStats } from './events/log.ts';

/**
 * The process's Prometheus registry, served at `/metrics` by every service. Services sharing a
 * process (embedded mode) share it; every series carries a `service` label.
 */
export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry, prefix: 'tributary_process_' });

const latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const metrics = {
  httpRequestDuration: new client.Histogram({
    name: 'tributary_http_request_duration_seconds',
    help: 'HTTP requests by route and status',
    labelNames: ['service', 'route', 'status'] as const,
    buckets: latency,
    registers: [registry],
  }),
  resolverDuration: new client.Histogram({
    name: 'tributary_graphql_resolver_duration_seconds',
    help: 'GraphQL resolver durations (fields with a resolver of their own)',
    labelNames: ['service', 'type', 'field'] as const,
    buckets: latency,
    registers: [registry],
  }),
  eventsPublished: new client.Counter({
    name: 'tributary_events_published_total',
    help: 'Events confirmed by the broker, by type',
    labelNames: ['service', 'type'] as const,
    registers: [registry],
  }),
  eventsConsumed: new client.Counter({
    name: 'tributary_events_consumed_total',
    help: 'Events taken by a consumer: applied, duplicate (already in the inbox), or irrelevant (no effect possible here, acked with no transaction)',
    labelNames: ['service', 'consumer', 'type', 'outcome'] as const,
    registers: [registry],
  }),
  eventsRetried: new client.Counter({
    name: 'tributary_events_retried_total',
    help: 'Events sent through a retry tier after a failure',
    labelNames: ['service', 'consumer', 'type'] as const,
    registers: [registry],
  }),
  eventsDeadLettered: new client.Counter({
    name: 'tributary_events_dead_lettered_total',
    help: 'Events moved to a dead-letter queue, by error code',
    labelNames: ['service', 'consumer', 'type', 'code'] as const,
    registers: [registry],
  }),
  jobDuration: new client.Histogram({
    name: 'tributary_job_duration_seconds',
    help: 'Upload to terminal state, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  }),
};

const outboxes = new Map<string, Database>();

async function outboxStats(): Promise<Map<string, { backlog: number; age: number }>> {
  const stats = new Map<string, { backlog: number; age: number }>();
  for (const [service, db] of outboxes) {
    try {
      const [row] = await db
        .fork()
        .execute<{ n: string; oldest: Date | string | null }[]>('select count(*) as n, min(created_at) as oldest from tributary_outbox where sent_at is null');
      const oldest = row?.oldest ? new Date(row.oldest).getTime() : null;
      stats.set(service, { backlog: Number(row?.n ?? 0), age: oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000) });
    } catch {
      // A database that does not answer has no stats this scrape; /ready reports it.
    }
  }
  return stats;
}

/**
 * `read` once per scrape, however many gauges ask for it: gauges collected together in one scrape
 * share the one read in flight.
 */
function oncePerScrape<T>(read: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => (pending ??= read().finally(() => setImmediate(() => (pending = undefined))));
}

/** A gauge set afresh on every scrape, one series per row `rows` returns. */
function scrapedGauge<L extends string, R>(name: string, help: string, labelNames: readonly L[], rows: () => Promise<Iterable<R>>, series: (row: R) => [Partial<Record<L, string>>, number]): void {
  new client.Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      for (const row of await rows()) this.set(...series(row));
    },
  });
}

const outboxScrape = oncePerScrape(outboxStats);
scrapedGauge('tributary_outbox_backlog', 'Outbox rows not yet confirmed by the broker', ['service'], outboxScrape, ([service, s]) => [{ service }, s.backlog]);
scrapedGauge('tributary_outbox_oldest_unsent_age_seconds', 'Age of the oldest outbox row not yet confirmed by the broker (0 when none)', ['service'], outboxScrape, ([service, s]) => [
  { service },
  s.age,
]);

/** Report a service's outbox backlog on every scrape; returns the function that stops it. */
export function watchOutbox(service: string, db: Database): () => void {
  outboxes.set(service, db);
  return () => {
    if (outboxes.get(service) === db) outboxes.delete(service);
  };
}

type BacklogReader = () => Promise<{ depth: number; oldestAgeSeconds: number }>;
const consumers = new Map<string, { service: string; consumer: string; read: BacklogReader }>();

async function consumerStats() {
  const stats: { labels: { service: string; consumer: string }; depth: number; oldestAgeSeconds: number }[] = [];
  for (const { service, consumer, read } of consumers.values()) {
    try {
      stats.push({ labels: { service, consumer }, ...(await read()) });
    } catch {
      // A broker that does not answer has no figure this scrape; /ready reports it.
    }
  }
  return stats;
}
const consumerScrape = oncePerScrape(consumerStats);
scrapedGauge('tributary_consumer_backlog', 'Events waiting for a consumer: ready in its queue plus delivered to it and not yet settled', ['service', 'consumer'], consumerScrape, (s) => [
  s.labels,
  s.depth,
]);
scrapedGauge(
  'tributary_consumer_oldest_event_age_seconds',
  'Age of the oldest event a consumer holds unsettled, from its outbox write (0 when it holds none)',
  ['service', 'consumer'],
  consumerScrape,
  (s) => [s.labels, s.oldestAgeSeconds],
);

/** Report a consumer's backlog on every scrape (the latest one registered under its name). */
export function watchConsumer(service: string, consumer: string, read: BacklogReader): void {
  consumers.set(`${service}.${consumer}`, { service, consumer, read });
}

const eventLogs = new Map<string, EventLog>();

async function eventLogStats(): Promise<{ labels: { namespace: string; kind: string }; stats: LogStats }[]> {
  const all = [];
  for (const [namespace, log] of eventLogs) {
    try {
      all.push({ labels: { namespace, kind: log.kind }, stats: await log.stats() });
    } catch {
      // A broker or database that does not answer has no figure this scrape; /ready reports it.
    }
  }
  return all;
}
const eventLogScrape = oncePerScrape(eventLogStats);
scrapedGauge('tributary_event_log_entries', 'Entries the event log keeps (on RabbitMQ: the span of offsets kept, approximate)', ['namespace', 'kind'], eventLogScrape, (s) => [s.labels, s.stats.entries]);
scrapedGauge(
  'tributary_event_log_bytes',
  'Bytes the event log keeps (absent where the broker does not say: RabbitMQ over AMQP 0-9-1)',
  ['namespace', 'kind'],
  async () => (await eventLogScrape()).filter((s) => s.stats.bytes !== undefined),
  (s) => [s.labels, s.stats.bytes!],
);
scrapedGauge('tributary_event_log_oldest_age_seconds', 'Age of the oldest entry the event log keeps (0 when empty): how far back a replay can go', ['namespace', 'kind'], eventLogScrape, (s) => [
  s.labels,
  s.stats.oldestAgeSeconds,
]);

/**
 * Report the event log's size and age on every scrape. One per namespace (the latest wins): in
 * `pnpm dev` every service shares the bus, and deployed each process reads the same stream.
 */
export function watchEventLog(namespace: string, log: EventLog): void {
  eventLogs.set(namespace, log);
}

/**
 * Add one per event to a counter labelled by event type, as one increment per type: batches
 * of hundreds of events would otherwise cost hundreds of label lookups. `labelsOf` builds the
 * labels for a type (their order is the order /metrics prints them in).
 */
export function countByType<L extends string>(counter: client.Counter<L>, types: Iterable<string>, labelsOf: (type: string) => Partial<Record<L, string>>): void {
  const counts = new Map<string, number>();
  for (const type of types) counts.set(type, (counts.get(type) ?? 0) + 1);
  for (const [type, n] of counts) counter.inc(labelsOf(type), n);
}

/** A counter fed from elsewhere (e.g. the AI package's counters), created once per name. */
export function externalCounter(name: string, help: string, labelNames: string[] = []): client.Counter<string> {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as client.Counter<string>;
  return new client.Counter({ name, help, labelNames, registers: [registry] });
}

type GaugeReader = () => Promise<readonly (readonly [Record<string, string>, number])[]>;
const scrapedGauges = new Map<string, GaugeReader>();

/**
 * A gauge a service reads on every scrape (e.g. its own work table), created once per name; the
 * latest reader registered wins (in `pnpm dev` one registry serves every service). A reader that
 * throws leaves the gauge empty for that scrape.
 */
export function watchGauge(name: string, help: string, labelNames: string[], read: GaugeReader): void {
  if (!scrapedGauges.has(name)) {
    scrapedGauge(
      name,
      help,
      labelNames,
      async () => (await scrapedGauges.get(name)?.().catch(() => [])) ?? [],
      (row) => [row[0], row[1]],
    );
  }
  scrapedGauges.set(name, read);
}
