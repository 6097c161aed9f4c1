import type pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from '../db/index.ts';
import { OUTBOX_CHANNEL } from '../db/entities.ts';
import { listenChannel } from '../db/listen.ts';
import { queryRows, queryRun } from '../db/sql.ts';
import { errorMessage } from '../errors.ts';
import { countByType, metrics } from '../metrics.ts';
import { Headers, type OutgoingMessage, type Transport } from './transport.ts';

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
  /**
   * Sent rows older than this are deleted. Default 1 h. `0` keeps nothing: each batch deletes
   * its rows in the transaction that claimed them, committed only after the broker's confirm
   * (less database work per event: no second row version, no pruning).
   */
  retainSentMs?: number;
  /** Backoff after a failed batch (broker down, database down). Default 500 ms, doubling to 15 s. */
  retryDelayMs?: number;
}

interface OutboxRow {
  id: string | number;
  event_id: string;
  type: string;
  payload: string;
  created_at: Date | string;
}

/** Ascending outbox ids: bigint as a decimal string (pg) or a number (PGlite). */
function byId(a: OutboxRow, b: OutboxRow): number {
  const x = String(a.id);
  const y = String(b.id);
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
}

/**
 * Publishes committed outbox rows. Each batch claims unsent rows with `FOR UPDATE SKIP LOCKED`
 * (so any number of relays share the work without double-claiming), publishes them with
 * publisher confirms, and marks them sent (or deletes them) in the same transaction, which
 * commits only after the confirm; a crash at any point leaves them unsent to be published
 * again (at-least-once; the consumers' inbox removes the duplicates). Rows are always selected
 * by `sent_at is null`, never by an id cursor, so a row whose transaction committed after a
 * higher id was published is not skipped. Relays wake on the commit's NOTIFY and also poll.
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
  private unlisten: (() => Promise<void>) | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private published = 0;
  /** Idle connections of the batches' own on PostgreSQL (one per batch in flight, at most). */
  private readonly idleClients: pg.Client[] = [];

  constructor(private readonly options: OutboxRelayOptions) {
    this.batchSize = options.batchSize ?? 500;
    // Written into the claiming statement's text on PostgreSQL (see publishBatch).
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${this.batchSize}`);
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
    // With no retention, batches delete their own rows: nothing to prune.
    if (this.retainSentMs > 0) {
      this.pruneTimer = setInterval(() => {
        this.prune().catch((error) => this.log.warn({ err: errorMessage(error) }, 'outbox prune failed'));
      }, Math.min(60_000, this.retainSentMs));
      this.pruneTimer.unref();
    }
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
    for (const client of this.idleClients.splice(0)) await client.end().catch(() => {});
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
    // The in-memory bus has no confirm to wait for: what it holds dies with the process, so a
    // claim held open until the publish returns would guard nothing a crash does not lose anyway.
    // There the claim commits by itself (two statements fewer per batch, on the one PGlite
    // session), and a publish that throws gives the rows back.
    if (this.options.transport.kind === 'memory' && this.retainSentMs > 0) {
      const rows = await queryRows<OutboxRow>(this.options.db.fork(), this.claimSql('?'), [this.batchSize]);
      if (rows.length === 0) return 0;
      try {
        await this.publishRows(rows);
      } catch (error) {
        await queryRun(this.options.db.fork(), `update tributary_outbox set sent_at = null where id = any(?::bigint[])`, [rows.map((r) => r.id)]);
        throw error;
      }
      return rows.length;
    }
    // Claim, and mark sent (or delete) in the same statement: the change stays uncommitted, its
    // rows locked (other relays skip them), until the broker has confirmed every message; a
    // failed publish or a crash rolls it back and the rows are unsent again.
    if (this.options.db.target.kind === 'postgres') return this.publishBatchOnPostgres();
    const em = this.options.db.fork();
    return em.transactional(async (tx) => {
      const rows = await queryRows<OutboxRow>(tx, this.claimSql('?'), [this.batchSize]);
      if (rows.length === 0) return 0;
      await this.publishRows(rows);
      return rows.length;
    });
  }

  /**
   * The same transaction in two round trips instead of three: `begin` and the claim go as one
   * simple query (which may hold several statements; the only value, the batch size, is our own
   * integer), then `commit` after the confirm. Each round trip is a send that wakes a backend,
   * and at a few events a second every batch is a claim of one or two rows: at 10 uploads/s,
   * relays made 22 of the ~70 statements per job. On its own connection, which a failure closes
   * (PostgreSQL rolls back a transaction whose session ends).
   */
  private async publishBatchOnPostgres(): Promise<number> {
    const client = this.idleClients.pop() ?? (await this.connect());
    let reusable = false;
    try {
      const results = (await client.query(`begin; ${this.claimSql(String(this.batchSize))}`)) as unknown as pg.QueryResult<OutboxRow>[];
      const rows = results[1]!.rows;
      if (rows.length > 0) await this.publishRows(rows);
      await client.query('commit');
      reusable = true;
      return rows.length;
    } finally {
      if (reusable && this.running) this.idleClients.push(client);
      else await client.end().catch(() => {});
    }
  }

  private async connect(): Promise<pg.Client> {
    const client = await this.options.db.connect();
    // A connection that fails while idle (the database ends it) is dropped here and replaced by the next batch.
    client.on('error', () => {
      const i = this.idleClients.indexOf(client);
      if (i >= 0) this.idleClients.splice(i, 1);
    });
    return client;
  }

  private async publishRows(rows: OutboxRow[]): Promise<void> {
    // `returning` gives no order; publish in commit-log (id) order as the select did.
    if (rows.length > 1) rows.sort(byId);
    const messages: OutgoingMessage[] = rows.map((row) => ({
      routingKey: row.type,
      messageId: row.event_id,
      body: Buffer.from(row.payload),
      headers: { [Headers.time]: new Date(row.created_at).getTime() },
    }));
    await this.options.transport.publish(messages);
    const service = this.options.service ?? 'unknown';
    countByType(metrics.eventsPublished, rows.map((row) => row.type), (type) => ({ service, type }));
  }

  /** The claiming statement: rows unsent and unlocked now, in id order, at most `limit` (a placeholder or a number). */
  private claimSql(limit: string): string {
    const unsent = `select id from tributary_outbox where sent_at is null order by id limit ${limit} for update skip locked`;
    return this.retainSentMs > 0
      ? `update tributary_outbox set sent_at = now() where id in (${unsent}) returning id, event_id, type, payload, created_at`
      : `delete from tributary_outbox where id in (${unsent}) returning id, event_id, type, payload, created_at`;
  }

  /** Delete rows sent longer ago than the retention. */
  async prune(): Promise<number> {
    const em = this.options.db.fork();
    return queryRun(em, `delete from tributary_outbox where sent_at is not null and sent_at < now() - (? * interval '1 millisecond')`, [this.retainSentMs]);
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
    this.unlisten = await listenChannel(this.options.db, OUTBOX_CHANNEL, () => this.wake(), this.log);
  }
}
