import type pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';
import type { Database } from './index.ts';

/** How long a lost LISTEN connection waits before it reconnects. */
const RECONNECT_MS = 2_000;

/**
 * LISTEN on a channel for as long as the returned function is not called: `onNotify` gets each
 * notification's payload. On PostgreSQL a connection of its own outside the pool (a pooled one
 * would be handed to others), reconnected after it is lost; on PGlite the instance's own
 * listener. Notifications are a wake-up, not a delivery: one sent while the connection is down
 * is lost, so every listener also polls (the relay, the analysis scheduler).
 * @returns stop listening; resolves without listening when it cannot (a warning is logged).
 */
export async function listenChannel(db: Database, channel: string, onNotify: (payload: string) => void, log: Logger): Promise<() => Promise<void>> {
  if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new RangeError(`invalid channel name: ${channel}`);
  if (db.pglite) return db.pglite.listen(channel, onNotify);
  if (db.target.kind !== 'postgres') return async () => {};
  let listener: pg.Client | undefined;
  let stopped = false;
  const connect = async (): Promise<void> => {
    const client = await db.connect();
    client.on('notification', (message) => onNotify(message.payload ?? ''));
    client.on('error', (error) => {
      log.warn({ channel, err: errorMessage(error) }, 'LISTEN connection lost; polling until it is back');
      if (listener === client) listener = undefined;
      client.end().catch(() => {});
      setTimeout(() => {
        if (!stopped && !listener) connect().catch(() => {});
      }, RECONNECT_MS).unref();
    });
    await client.query(`listen ${channel}`);
    if (stopped) await client.end();
    else listener = client;
  };
  try {
    await connect();
  } catch (error) {
    log.warn({ channel, err: errorMessage(error) }, 'LISTEN unavailable; polling only');
  }
  return async () => {
    stopped = true;
    const client = listener;
    listener = undefined;
    await client?.end();
  };
}
