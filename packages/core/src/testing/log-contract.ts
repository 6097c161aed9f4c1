import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CoreErrorCode } from '../errors.ts';
import type { EventLog, LogEntry, LogReadOptions } from '../events/log.ts';
import type { OutgoingMessage, Transport } from '../events/transport.ts';
import type { Database } from '../db/index.ts';
import { SqlEventLog } from '../events/log-sql.ts';
import { InMemoryTransport } from '../events/memory.ts';
import { waitFor } from './services.ts';

export interface LogFixture {
  log: EventLog;
  /** Publish in order, the way the log gets its entries in production (the exchange, the in-memory bus). */
  publish(messages: OutgoingMessage[]): Promise<void>;
  /** Apply retention now where the log trims on a timer (the SQL table); nothing where the broker does it. */
  trim?(): Promise<void>;
  /** Remove what the test created (stream, exchange, tables) and close. */
  cleanup(): Promise<void>;
}

export interface LogFixtureOptions {
  /**
   * Keep very little (a few kB or a few dozen entries), so a test can publish past it and see
   * the oldest entries go.
   */
  tinyRetention: boolean;
}

/**
 * The SQL log over `db` behind the in-memory bus, as embedded mode runs it; `dispose` removes what
 * the test left in the database after the bus and the log are closed.
 */
export async function sqlLogFixture(db: Database, namespace: string, options: LogFixtureOptions, dispose: () => Promise<void>): Promise<LogFixture> {
  const log = new SqlEventLog(db, options.tinyRetention ? { maxEntries: 20 } : {});
  const transport = new InMemoryTransport(namespace, log);
  await transport.start();
  return {
    log,
    publish: (messages) => transport.publish(messages),
    trim: async () => void (await log.trim()),
    cleanup: async () => {
      await transport.close();
      log.close();
      await dispose();
    },
  };
}

/**
 * A broker transport's own log (RabbitMQ, Redis, NATS), started; `dispose` removes what the test
 * declared on the broker once the transport is closed.
 */
export async function transportLogFixture(transport: Transport, dispose: () => Promise<void>): Promise<LogFixture> {
  await transport.start();
  return {
    log: transport.log!,
    publish: (messages) => transport.publish(messages),
    cleanup: async () => {
      await transport.close();
      await dispose();
    },
  };
}

/**
 * A follower across a lost connection (what `lose` does: connections cut, the server restarted):
 * three entries of history, the loss, two published after it, one more live; it must hand out
 * all six, in order, exactly once. Returns what it handed out.
 */
export async function expectFollowerAcrossLoss(transport: Transport, lose: () => Promise<void>): Promise<LogEntry[]> {
  const message = (text: string): OutgoingMessage => ({ routingKey: 'doc.x', messageId: randomUUID(), body: Buffer.from(text) });
  await transport.publish(['a', 'b', 'c'].map(message));
  const got: LogEntry[] = [];
  const handle = await transport.log!.follow({ from: 'beginning' }, (e) => got.push(e));
  await waitFor(() => got.length === 3, 10_000, 'the history');
  await lose();
  // publish waits for the transport's reconnection (within its timeout).
  await transport.publish(['d', 'e'].map(message));
  await waitFor(() => got.length >= 5, 20_000, 'entries after the loss');
  await transport.publish([message('f')]);
  await waitFor(() => got.length >= 6, 10_000, 'a live entry');
  await handle.close();
  expect(got.map((e) => e.body.toString())).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  return got;
}

interface Ctx {
  readonly log: EventLog;
  readonly fixture: LogFixture;
  message(routingKey: string, text?: string): OutgoingMessage;
}

/**
 * The behaviour every {@link EventLog} must have, run against each implementation (the array,
 * the SQL table on PGlite and PostgreSQL, the RabbitMQ stream).
 */
export function describeLogContract(name: string, create: (namespace: string, options: LogFixtureOptions) => Promise<LogFixture>): void {
  describe(`event log contract: ${name}`, () => {
    let fixture: LogFixture | undefined;
    let tiny = false;
    beforeEach(() => {
      tiny = false;
    });
    const open = async () => {
      fixture = await create(`lc_${randomUUID().slice(0, 8)}`, { tinyRetention: tiny });
      return fixture;
    };
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });
    const ctx = async (): Promise<Ctx> => {
      const f = await open();
      return { log: f.log, fixture: f, message: (routingKey, text = randomUUID()) => ({ routingKey, messageId: randomUUID(), body: Buffer.from(text), headers: { 'x-test': text } }) };
    };
    const withTiny = async () => {
      tiny = true;
      return ctx();
    };

    it('keeps every entry in publish order with its type, id, headers and body', async () => keepsOrder(await ctx()));
    it('hands out only the types asked for, with topic wildcards, and still returns the last offset read', async () => filtersTypes(await ctx()));
    it('reads from the beginning, after an offset, from a time, and from the end', async () => readsFromEachStart(await ctx()));
    it('stops a read at the end as it stood when the read began; a read after its last offset gets the rest', async () => readStopsAtItsEnd(await ctx()));
    it('follows history then live entries, with no gap and no duplicate', async () => followsHistoryThenLive(await ctx()));
    it('follows after an offset, from a time and from the end', async () => followsFromPositions(await ctx()));
    it('stops a read when its signal aborts', async () => stopsOnAbort(await ctx()));
    it('refuses a cursor past its end with CURSOR_EXPIRED', async () => refusesPastEnd(await ctx()));
    it('refuses with CURSOR_EXPIRED a cursor whose entries retention removed', async () => refusesExpired(await withTiny()));
    it('reports its entries, first and last offsets and the age of the oldest', async () => reportsStats(await ctx()));
  });
}

async function collect(log: EventLog, options: LogReadOptions): Promise<{ entries: LogEntry[]; last: number | undefined }> {
  const entries: LogEntry[] = [];
  const last = await log.read(options, (e) => void entries.push(e));
  return { entries, last };
}

const texts = (entries: readonly LogEntry[]) => entries.map((e) => e.body.toString());

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  await expect(promise).rejects.toMatchObject({ code });
}

async function keepsOrder(t: Ctx): Promise<void> {
  const sent = Array.from({ length: 12 }, (_, i) => t.message(i % 2 ? 'document.uploaded' : 'analysis.completed', `m${i}`));
  await t.fixture.publish(sent.slice(0, 5));
  await t.fixture.publish(sent.slice(5));
  const { entries, last } = await collect(t.log, { from: 'beginning' });
  expect(texts(entries)).toEqual(sent.map((m) => m.body.toString()));
  expect(entries.map((e) => e.routingKey)).toEqual(sent.map((m) => m.routingKey));
  expect(entries.map((e) => e.messageId)).toEqual(sent.map((m) => m.messageId));
  expect(entries[3]!.headers['x-test']).toBe('m3');
  for (let i = 1; i < entries.length; i++) expect(entries[i]!.offset).toBeGreaterThan(entries[i - 1]!.offset);
  expect(last).toBe(entries.at(-1)!.offset);
}

async function filtersTypes(t: Ctx): Promise<void> {
  await t.fixture.publish([t.message('document.uploaded', 'a'), t.message('analysis.completed', 'b'), t.message('analysis.failed', 'c'), t.message('job.updated', 'd')]);
  const all = await collect(t.log, { from: 'beginning' });
  const some = await collect(t.log, { from: 'beginning', types: ['analysis.*', 'document.uploaded'] });
  expect(texts(some.entries)).toEqual(['a', 'b', 'c']);
  // The last entry was filtered out, yet resuming after the returned offset must not see it again.
  expect(some.last).toBe(all.last);
  expect((await collect(t.log, { from: 'beginning', types: ['nothing.here'] })).entries).toEqual([]);
}

async function readsFromEachStart(t: Ctx): Promise<void> {
  await t.fixture.publish([t.message('a.x', 'a1'), t.message('a.x', 'a2'), t.message('a.x', 'a3')]);
  const first = await collect(t.log, { from: 'beginning' });
  await new Promise((r) => setTimeout(r, 30));
  const time = new Date();
  await new Promise((r) => setTimeout(r, 30));
  await t.fixture.publish([t.message('b.x', 'b1'), t.message('b.x', 'b2')]);
  expect(texts((await collect(t.log, { from: { after: first.entries[0]!.offset } })).entries)).toEqual(['a2', 'a3', 'b1', 'b2']);
  expect(texts((await collect(t.log, { from: { after: first.last! } })).entries)).toEqual(['b1', 'b2']);
  expect(texts((await collect(t.log, { from: { time } })).entries)).toEqual(['b1', 'b2']);
  expect(await collect(t.log, { from: 'end' })).toEqual({ entries: [], last: undefined });
  expect(await collect(t.log, { from: { time: new Date(Date.now() + 3_600_000) } })).toEqual({ entries: [], last: undefined });
}

async function readStopsAtItsEnd(t: Ctx): Promise<void> {
  await t.fixture.publish([1, 2, 3, 4, 5].map((i) => t.message('doc.x', `old${i}`)));
  const seen: LogEntry[] = [];
  let more: Promise<void> | undefined;
  const last = await t.log.read({ from: 'beginning' }, async (entry) => {
    seen.push(entry);
    // Appended while the read is under way: not part of it.
    if (seen.length === 1) {
      more = t.fixture.publish([1, 2, 3].map((i) => t.message('doc.x', `new${i}`)));
      await more;
    }
  });
  expect(texts(seen)).toEqual(['old1', 'old2', 'old3', 'old4', 'old5']);
  expect(last).toBe(seen.at(-1)!.offset);
  expect(texts((await collect(t.log, { from: { after: last! } })).entries)).toEqual(['new1', 'new2', 'new3']);
}

async function followsHistoryThenLive(t: Ctx): Promise<void> {
  await t.fixture.publish(Array.from({ length: 20 }, (_, i) => t.message('doc.x', `h${i}`)));
  const got: LogEntry[] = [];
  const publishing = (async () => {
    for (let i = 0; i < 10; i++) await t.fixture.publish([t.message('doc.x', `l${i}`), t.message('other.y', `o${i}`)]);
  })();
  const handle = await t.log.follow({ from: 'beginning', types: ['doc.*'] }, (e) => got.push(e));
  await publishing;
  const expected = [...Array.from({ length: 20 }, (_, i) => `h${i}`), ...Array.from({ length: 10 }, (_, i) => `l${i}`)];
  await waitFor(() => got.length >= expected.length, 10_000, 'every entry followed');
  await t.fixture.publish([t.message('doc.x', 'after')]);
  await waitFor(() => got.length === expected.length + 1, 10_000, 'the live entry');
  await handle.close();
  expect(texts(got)).toEqual([...expected, 'after']);
  await t.fixture.publish([t.message('doc.x', 'closed')]);
  await new Promise((r) => setTimeout(r, 100));
  expect(got).toHaveLength(expected.length + 1);
}

async function followsFromPositions(t: Ctx): Promise<void> {
  await t.fixture.publish([t.message('doc.x', 'a'), t.message('doc.x', 'b'), t.message('doc.x', 'c')]);
  const { entries } = await collect(t.log, { from: 'beginning' });
  await new Promise((r) => setTimeout(r, 30));
  const time = new Date();
  await new Promise((r) => setTimeout(r, 30));
  await t.fixture.publish([t.message('doc.x', 'c2')]);
  const afterA: LogEntry[] = [];
  const fromEnd: LogEntry[] = [];
  const fromTime: LogEntry[] = [];
  const h1 = await t.log.follow({ from: { after: entries[0]!.offset } }, (e) => afterA.push(e));
  const h2 = await t.log.follow({ from: 'end' }, (e) => fromEnd.push(e));
  const h3 = await t.log.follow({ from: { time } }, (e) => fromTime.push(e));
  await t.fixture.publish([t.message('doc.x', 'd')]);
  await waitFor(() => afterA.length === 4 && fromEnd.length === 1 && fromTime.length === 2, 10_000, 'the three followers');
  await Promise.all([h1.close(), h2.close(), h3.close()]);
  expect(texts(afterA)).toEqual(['b', 'c', 'c2', 'd']);
  expect(texts(fromEnd)).toEqual(['d']);
  expect(texts(fromTime)).toEqual(['c2', 'd']);
}

async function stopsOnAbort(t: Ctx): Promise<void> {
  await t.fixture.publish(Array.from({ length: 10 }, (_, i) => t.message('doc.x', `e${i}`)));
  const controller = new AbortController();
  const seen: string[] = [];
  await t.log.read({ from: 'beginning' }, (e) => {
    seen.push(e.body.toString());
    if (seen.length === 3) controller.abort();
  }, controller.signal);
  expect(seen).toEqual(['e0', 'e1', 'e2']);
}

async function refusesPastEnd(t: Ctx): Promise<void> {
  await t.fixture.publish([t.message('doc.x', 'only')]);
  const { last } = await collect(t.log, { from: 'beginning' });
  await expectCode(t.log.read({ from: { after: last! + 1_000 } }, () => {}), CoreErrorCode.CURSOR_EXPIRED);
  await expectCode(t.log.follow({ from: { after: last! + 1_000 } }, () => {}), CoreErrorCode.CURSOR_EXPIRED);
  // The last entry itself is a good cursor: nothing after it yet.
  expect((await collect(t.log, { from: { after: last! } })).entries).toEqual([]);
}

async function refusesExpired(t: Ctx): Promise<void> {
  await t.fixture.publish([t.message('doc.x', 'early1'), t.message('doc.x', 'early2')]);
  const { entries } = await collect(t.log, { from: 'beginning' });
  const cursor = entries[0]!.offset;
  const filler = 'x'.repeat(300);
  // Publish until retention has dropped the early entries (the broker drops whole segments).
  await waitFor(
    async () => {
      await t.fixture.publish(Array.from({ length: 10 }, () => t.message('doc.filler', filler)));
      await t.fixture.trim?.();
      const stats = await t.log.stats();
      return stats.first !== undefined && stats.first > cursor + 1;
    },
    30_000,
    'retention to drop the first entries',
  );
  await expectCode(t.log.read({ from: { after: cursor } }, () => {}), CoreErrorCode.CURSOR_EXPIRED);
  await expectCode(t.log.follow({ from: { after: cursor } }, () => {}), CoreErrorCode.CURSOR_EXPIRED);
  const kept = await collect(t.log, { from: 'beginning' });
  expect(kept.entries.length).toBeGreaterThan(0);
  expect(texts(kept.entries)).not.toContain('early1');
  // A cursor at the oldest kept entry still works.
  await t.log.read({ from: { after: kept.entries[0]!.offset } }, () => {});
}

async function reportsStats(t: Ctx): Promise<void> {
  const empty = await t.log.stats();
  expect(empty.entries).toBe(0);
  expect(empty.first).toBeUndefined();
  await t.fixture.publish(Array.from({ length: 6 }, (_, i) => t.message('doc.x', `s${i}`)));
  await new Promise((r) => setTimeout(r, 1_100));
  const { entries } = await collect(t.log, { from: 'beginning' });
  const stats = await t.log.stats();
  // The stores count entries; a RabbitMQ stream tells offsets only, and its log packs each
  // publish into one record: there it is the records (here one publish: at least one).
  expect(stats.entries).toBeGreaterThanOrEqual(t.log.kind === 'rabbitmq' ? 1 : 6);
  expect(stats.first).toBe(entries[0]!.offset);
  expect(stats.last).toBeGreaterThanOrEqual(entries.at(-1)!.offset);
  expect(stats.oldestAgeSeconds).toBeGreaterThanOrEqual(1);
  expect(stats.oldestAgeSeconds).toBeLessThan(120);
  if (stats.bytes !== undefined) expect(stats.bytes).toBeGreaterThan(0);
}
