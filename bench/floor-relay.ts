/**
 * The outbox relay of the hand-written floors (bench:pipeline's and bench:deployed's), written
 * once: the shape of the services' relay (packages/core/src/events/relay.ts) on raw pg and
 * amqplib. Each batch is one transaction in two round trips: `begin` and the claim (`for update
 * skip locked`, marking the rows sent or deleting them) as one simple query, then `commit` once
 * the broker has confirmed every message. Loops sleep until the outbox's NOTIFY wakes them, with
 * a poll as the safety net, and a full batch goes straight on to the next.
 */
import { coalesceWrites } from '@tributary/core/events';
import { connect, type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import pg from 'pg';

export interface FloorOutboxRow {
  id: string;
  event_id: string;
  type: string;
  payload: string;
}

export interface FloorRelayOptions {
  databaseUrl: string;
  channel: ConfirmChannel;
  exchange: string;
  /** The outbox table (columns id, event_id, type, payload, sent_at) and the channel its insert trigger notifies. */
  table: string;
  notifyChannel: string;
  batchSize: number;
  /** Batches in flight at once, each on a connection of its own. */
  concurrency: number;
  /** Mark claimed rows sent (kept), as the services do by default, or delete them. */
  retain: boolean;
  /** An extra condition on the rows to claim (direct dispatch's sweep: only rows left for a while). */
  claimFilter?: string;
  /** Whether a NOTIFY wakes the loops (direct dispatch's sweep only polls). Default true. */
  wakeOnNotify?: boolean;
  /** The safety-net poll. Default 1 000 ms, as the services'. */
  pollMs?: number;
}

/** An amqplib connection with the services' transport's socket settings: no Nagle delay, and writes coalesced as it does. */
export async function connectAmqp(url: string): Promise<ChannelModel> {
  const connection = await connect(url, { noDelay: true });
  coalesceWrites(connection);
  return connection;
}

/** The publish options the services' transport sends an outbox row with. */
const publishOptions = (row: FloorOutboxRow): Options.Publish => ({
  persistent: true,
  mandatory: true,
  messageId: row.event_id,
  type: row.type,
  contentType: 'application/cloudevents+json',
});

/** Publish `rows` in id order on a confirm channel: resolves once the broker has confirmed each of them. */
export function publishWithConfirms(channel: ConfirmChannel, exchange: string, rows: FloorOutboxRow[]): Promise<void> {
  if (rows.length > 1) rows.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : 1));
  return new Promise<void>((resolve, reject) => {
    let pending = rows.length;
    if (pending === 0) return resolve();
    for (const row of rows) {
      channel.publish(exchange, row.type, Buffer.from(row.payload), publishOptions(row), (error: unknown) => {
        if (error) reject(error instanceof Error ? error : new Error(String(error)));
        else if (--pending === 0) resolve();
      });
    }
  });
}

/** Starts the relay's loops; the function it returns stops them after the batches in flight. */
export async function startFloorRelay(options: FloorRelayOptions): Promise<() => Promise<void>> {
  const pollMs = options.pollMs ?? 1_000;
  const listener = new pg.Client({ connectionString: options.databaseUrl });
  await listener.connect();
  let running = true;
  let wakePending = false;
  const sleepers: Array<() => void> = [];
  const wake = () => {
    wakePending = true;
    for (const resolve of sleepers.splice(0)) resolve();
  };
  if (options.wakeOnNotify ?? true) {
    listener.on('notification', wake);
    await listener.query(`listen ${options.notifyChannel}`);
  }
  const unsent = `select id from ${options.table} where sent_at is null ${options.claimFilter ? `and ${options.claimFilter}` : ''} order by id limit ${options.batchSize} for update skip locked`;
  const claim = options.retain
    ? `begin; update ${options.table} set sent_at = now() where id in (${unsent}) returning id, event_id, type, payload`
    : `begin; delete from ${options.table} where id in (${unsent}) returning id, event_id, type, payload`;

  const loop = async () => {
    const client = new pg.Client({ connectionString: options.databaseUrl });
    await client.connect();
    try {
      while (running) {
        wakePending = false;
        const results = (await client.query(claim)) as unknown as pg.QueryResult<FloorOutboxRow>[];
        const rows = results[1]!.rows;
        await publishWithConfirms(options.channel, options.exchange, rows);
        await client.query('commit');
        if (rows.length < options.batchSize && !wakePending && running) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, pollMs);
            sleepers.push(() => (clearTimeout(timer), resolve()));
          });
        }
      }
    } finally {
      await client.end();
    }
  };
  const loops = Array.from({ length: options.concurrency }, loop);
  return async () => {
    running = false;
    wake();
    await Promise.all(loops);
    await listener.end();
  };
}
