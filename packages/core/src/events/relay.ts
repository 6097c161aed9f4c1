import pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from '../db/index.ts';
import { OUTBOX_CHANNEL } from '../db/entities.ts';
import { errorMessage } from '../errors.ts';
import { metrics } from '../metrics.ts';
import type { OutgoingMessage, Transport } from './transport.ts';

export interface OutboxRelayOptions {
  /** The owning service (metrics label). */
  service?: string;
  db: Database;
  transport: Transport;
  logger: Logger;
  /** Rows claimed and published per transaction. Default 500. */
  batchSize?: number;
  /** Batches in flight at once (each claims its own rows). Default 1. */
  concurrency?: number;
  /** Safety-net poll when no notification arrives. Default 1 000 ms. */
  pollIntervalMs?: number;
  /** Sent rows older than this are deleted. Default 1 h. */
  retainSentMs?: number;
  /** Backoff after a failed batch (broker down, database down). Default 500 ms, doubling to 15 s. */
  retryDelayMs?: number;
}

interface OutboxRow {
  id: string | number;
  event_id: string;
  type: string;
  payload: string;
}

/**
 * Publishes committed outbox rows. Each batch claims unsent rows with `FOR UPDATE SKIP LOCKED`
 * (so any number of relays share the work without double-claiming), publishes them with
 * publisher confirms, and marks them sent in the same transaction only after the confirm; a
 * crash at any point leaves them unsent to be published again (at-least-once; the consumers'
 * inbox removes the duplicates). Rows are always selected by `sent_at is null`, never by an
 * id cursor, so a row whose transaction committed after a higher id was published is not skipped.
 * Relays wake on the commit's NOTIFY and also poll.
 */
export class OutboxRelay {
  private readonly batchSize: number;
  private readonly concurrency: number;
  private readonly pollIntervalMs: number;
  private readonly retainSentMs: number;
  private readonly retryDelayMs: number;
  private readonly log: Logger;
  private running = false;
  private loops: Promise<void>[] = [];
  private wakers: (() => void)[] = [];
  private stopWaiters: (() => void)[] = [];
  private wakePending = false;
  private listener: pg.Client | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private published = 0;

  constructor(private readonly options: OutboxRelayOptions) {
    this.batchSize = options.batchSize ?? 500;
    this.concurrency = options.concurrency ?? 1;
    this.pollIntervalMs = options.pollIntervalMs ?? 1_000;
    this.retainSentMs = options.retainSentMs ?? 3_600_000;
    this.retryDelayMs = options.retryDelayMs ?? 500;
    this.log = options.logger.child({ component: 'outbox-relay' });
  }

  /** Events published since start (confirmed by the broker). */
  get publishedCount(): number {
    return this.published;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.listen();
    for (let i = 0; i < this.concurrency; i++) this.loops.push(this.loop());
    this.pruneTimer = setInterval(() => {
      this.prune().catch((error) => this.log.warn({ err: errorMessage(error) }, 'outbox prune failed'));
    }, Math.min(60_000, this.retainSentMs));
    this.pruneTimer.unref();
  }

  /** Publish now instead of at the next notification or poll. */
  wake(): void {
    this.wakePending = true;
    for (const wake of this.wakers.splice(0)) wake();
  }

  /** Stop after the batches in flight; unsent rows stay for the next start (or another relay). */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake();
    for (const stop of this.stopWaiters.splice(0)) stop();
    clearInterval(this.pruneTimer);
    await Promise.all(this.loops);
    this.loops = [];
    await this.unlisten?.().catch(() => {});
    this.unlisten = undefined;
  }

  /** Publish every row that is unsent and unclaimed now (graceful shutdown, tests). */
  async flush(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.publishBatch();
      total += n;
      if (n === 0) return total;
    }
  }

  /** Claim, publish and mark one batch. Returns the number of rows published. */
  async publishBatch(): Promise<number> {
    const em = this.options.db.fork();
    return em.transactional(async (tx) => {
      const rows = await tx.execute<OutboxRow[]>(
        'select id, event_id, type, payload from tributary_outbox where sent_at is null order by id limit ? for update skip locked',
        [this.batchSize],
      );
      if (rows.length === 0) return 0;
      const messages: OutgoingMessage[] = rows.map((row) => ({
        routingKey: row.type,
        messageId: row.event_id,
        body: Buffer.from(row.payload),
      }));
      await this.options.transport.publish(messages);
      await tx.execute('update tributary_outbox set sent_at = now() where id in (?)', [rows.map((r) => r.id)]);
      const service = this.options.service ?? 'unknown';
      for (const row of rows) metrics.eventsPublished.inc({ service, type: row.type });
      return rows.length;
    });
  }

  /** Delete rows sent longer ago than the retention. */
  async prune(): Promise<number> {
    const em = this.options.db.fork();
    const result = await em.execute(
      `delete from tributary_outbox where sent_at is not null and sent_at < now() - (? * interval '1 millisecond')`,
      [this.retainSentMs],
      'run',
    );
    return (result as { affectedRows?: number }).affectedRows ?? 0;
  }

  private async loop(): Promise<void> {
    let delay = this.retryDelayMs;
    while (this.running) {
      this.wakePending = false;
      let published = 0;
      try {
        published = await this.publishBatch();
        this.published += published;
        delay = this.retryDelayMs;
      } catch (error) {
        this.log.warn({ err: errorMessage(error), retryInMs: delay }, 'outbox batch failed; rows stay unsent');
        await this.sleep(delay, false);
        delay = Math.min(delay * 2, 15_000);
        continue;
      }
      // A full batch means more is waiting; otherwise sleep until a commit notifies or the poll.
      if (published < this.batchSize && !this.wakePending) await this.sleep(this.pollIntervalMs, true);
    }
  }

  private sleep(ms: number, wakeable: boolean): Promise<void> {
    return new Promise((resolve) => {
      // A backoff after a failure is not cut short by commits (that would hammer a dead broker),
      // only by stop().
      const list = wakeable ? this.wakers : this.stopWaiters;
      const done = () => {
        clearTimeout(timer);
        const i = list.indexOf(done);
        if (i >= 0) list.splice(i, 1);
        resolve();
      };
      const timer = setTimeout(done, ms);
      list.push(done);
    });
  }

  private async listen(): Promise<void> {
    const { db } = this.options;
    if (db.pglite) {
      this.unlisten = await db.pglite.listen(OUTBOX_CHANNEL, () => this.wake());
      return;
    }
    if (db.target.kind !== 'postgres') return;
    const url = new URL(db.target.url);
    url.pathname = `/${encodeURIComponent(db.target.dbName)}`;
    const connectListener = async (): Promise<void> => {
      const client = new pg.Client({ connectionString: url.toString() });
      client.on('notification', () => this.wake());
      client.on('error', (error) => {
        this.log.warn({ err: errorMessage(error) }, 'outbox LISTEN connection lost; polling until it is back');
        client.end().catch(() => {});
        if (this.listener === client) this.listener = undefined;
        // Reconnect later; meanwhile the poll keeps rows moving.
        setTimeout(() => {
          if (this.running && !this.listener) connectListener().catch(() => {});
        }, 2_000).unref();
      });
      await client.connect();
      await client.query(`listen ${OUTBOX_CHANNEL}`);
      this.listener = client;
    };
    try {
      await connectListener();
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'outbox LISTEN unavailable; polling only');
    }
    this.unlisten = async () => {
      const client = this.listener;
      this.listener = undefined;
      await client?.end();
    };
  }
}
