import { queryRows, queryRun, type Database } from '@tributary/core/db';
import type { LimitFunction } from 'p-limit';
import { AiError, isAiError } from './errors.ts';
import type { LlmProvider } from './provider.ts';
import { sleep } from './retry.ts';
import type { AnalysisInput, AnalysisResult, AnalyzeOptions } from './types.ts';

/** A provider's rate limits, over any sliding window of {@link RateLimits.windowMs}. */
export interface RateLimits {
  /** Calls per window; unset: no limit. */
  requests?: number;
  /** Tokens per window (each call counts its high estimate, as providers count `max_tokens`); unset: no limit. */
  tokens?: number;
  /** Default 60,000 ms (the `…_PER_MINUTE` settings). */
  windowMs?: number;
}

/** Admitted (`call` names the admission, for {@link RateLimitStore.finish}; absent when nothing is counted), or the wait. */
export type Admission = { ok: true; call?: string } | { ok: false; waitMs: number };

/**
 * Where the calls of every process of a deployment are counted, so their limits hold together:
 * the analysis database ({@link SqlRateLimitStore}) or Redis ({@link RedisRateLimitStore}).
 */
export interface RateLimitStore {
  /**
   * Admit one call of `tokens` for `key` if the window before now holds room for it under
   * `limits`, and no pause is on; else how long to wait before asking again. Atomic across
   * processes: two callers racing for the last slot cannot both get it.
   */
  tryAcquire(key: string, tokens: number, limits: Required<RateLimits>): Promise<Admission>;
  /**
   * The admitted call has ended: it now counts from this moment. The provider counts a call when
   * it receives it, which is after its admission by however long the request took to send; from
   * its end, the call's window certainly covers the provider's, so no window the provider
   * sees holds more than the limit.
   */
  finish(key: string, call: string): Promise<void>;
  /** No call for `key` in any process until `ms` from now (a 429's `Retry-After`). */
  pause(key: string, ms: number): Promise<void>;
  close?(): Promise<void>;
}

/** A connection outside the database's pool. */
type Client = Awaited<ReturnType<Database['connect']>>;

/** How long to wait after a call or pause leaves the window, so the next ask finds room. */
const SLACK_MS = 5;

/**
 * The wait a sliding-window log implies: `calls` (oldest first, times in ms, as the store's clock
 * has them) are those within the window before `now`. 0 when a call of `tokens` fits now.
 */
export function windowWait(calls: readonly { at: number; tokens: number }[], now: number, tokens: number, limits: Required<RateLimits>): number {
  let wait = 0;
  if (limits.requests > 0 && calls.length + 1 > limits.requests) {
    // The (n - limit + 1)-th oldest must leave the window first.
    wait = calls[calls.length - limits.requests]!.at + limits.windowMs - now;
  }
  if (limits.tokens > 0) {
    let held = calls.reduce((sum, c) => sum + c.tokens, 0);
    for (const call of calls) {
      if (held + tokens <= limits.tokens) break;
      held -= call.tokens;
      wait = Math.max(wait, call.at + limits.windowMs - now);
    }
  }
  return wait > 0 ? wait + SLACK_MS : 0;
}

/**
 * The store in the analysis database (PostgreSQL or PGlite): one row per admitted call in
 * `ai_rate_calls` (pruned as it leaves the window), pauses in `ai_rate_pauses`. Admission is one
 * short transaction under a per-key advisory lock, on the database's clock.
 */
export class SqlRateLimitStore implements RateLimitStore {
  /** Pause reads in flight, by key. */
  private readonly pauseReads = new Map<string, Promise<Admission>>();
  /** PostgreSQL: the connection pause reads go on, outside the pool (made on first use, and again once it ends). */
  private pauseConnection: Promise<Client> | undefined;

  constructor(private readonly db: Database) {}

  async tryAcquire(key: string, tokens: number, limits: Required<RateLimits>): Promise<Admission> {
    if (!limits.requests && !limits.tokens) {
      // Nothing to count: only a pause can hold the call, and reading it needs no lock. This
      // read runs inside the call's slot, so the provider's slot stands idle until it answers:
      // calls that ask while one is in flight share it (a wave of answers frees every slot at
      // once), and it goes on a connection of its own, not queued for the pool behind the
      // claims and settlements in flight (bench:ai as deployed, 500 documents, four runs each,
      // interleaved with the commit before: 28.0–28.5 docs/s against 27.2–27.8). A call that
      // joins decides on the table as it was at most one round trip before it asked: the race
      // any read has with a pause committed while it runs.
      let read = this.pauseReads.get(key);
      if (!read) {
        read = this.readPause(key).finally(() => this.pauseReads.delete(key));
        this.pauseReads.set(key, read);
      }
      return read;
    }
    return this.db.fork().transactional(async (em) => {
      const run = <T extends object>(sql: string, params: unknown[]) => queryRows<T>(em, sql, params);
      await run(`select pg_advisory_xact_lock(hashtext(?))`, [`tributary-ai-rate:${key}`]);
      const [clock] = await run<{ now: number | string; paused_ms: number | string | null }>(
        `select extract(epoch from now()) * 1000 as now, (select extract(epoch from (until - now())) * 1000 from ai_rate_pauses where key = ? and until > now()) as paused_ms`,
        [key],
      );
      if (clock!.paused_ms !== null) return { ok: false, waitMs: Math.ceil(Number(clock!.paused_ms)) + SLACK_MS };
      await run(`delete from ai_rate_calls where key = ? and at <= now() - (?::float8 * interval '1 millisecond')`, [key, limits.windowMs]);
      const rows = await run<{ at: number | string; tokens: number }>(`select extract(epoch from at) * 1000 as at, tokens from ai_rate_calls where key = ? order by at, id`, [key]);
      const wait = windowWait(
        rows.map((r) => ({ at: Number(r.at), tokens: r.tokens })),
        Number(clock!.now),
        tokens,
        limits,
      );
      if (wait > 0) return { ok: false, waitMs: Math.ceil(wait) };
      const [call] = await run<{ id: string | number }>(`insert into ai_rate_calls (key, at, tokens) values (?, now(), ?) returning id`, [key, tokens]);
      return { ok: true, call: String(call!.id) };
    });
  }

  private async readPause(key: string): Promise<Admission> {
    const sql = 'select extract(epoch from (until - now())) * 1000 as paused_ms from ai_rate_pauses where key = $1 and until > now()';
    let pause: { paused_ms: number | string } | undefined;
    if (this.db.target.kind === 'postgres') {
      const connection = (this.pauseConnection ??= this.connectForPauses());
      const client = await connection;
      try {
        [pause] = (await client.query<{ paused_ms: number | string }>(sql, [key])).rows;
      } catch (error) {
        // The next read makes a new connection.
        if (this.pauseConnection === connection) this.pauseConnection = undefined;
        await client.end().catch(() => {});
        throw error;
      }
    } else {
      [pause] = await queryRows<{ paused_ms: number | string }>(this.db.fork(), sql.replace('$1', '?'), [key]);
    }
    return pause ? { ok: false, waitMs: Math.ceil(Number(pause.paused_ms)) + SLACK_MS } : { ok: true };
  }

  private connectForPauses(): Promise<Client> {
    const connection: Promise<Client> = this.db.connect().then((client) => {
      // Ended by the database or by Database.close: the next read makes a new one.
      client.once('end', () => {
        if (this.pauseConnection === connection) this.pauseConnection = undefined;
      });
      return client;
    });
    // Not connected: the next read tries again (this one fails with the error).
    connection.catch(() => {
      if (this.pauseConnection === connection) this.pauseConnection = undefined;
    });
    return connection;
  }

  async finish(key: string, call: string): Promise<void> {
    await queryRun(this.db.fork(), `update ai_rate_calls set at = greatest(at, now()) where id = ? and key = ?`, [call, key]);
  }

  async pause(key: string, ms: number): Promise<void> {
    await queryRun(
      this.db.fork(),
      `insert into ai_rate_pauses (key, until) values (?, now() + (?::float8 * interval '1 millisecond'))
       on conflict (key) do update set until = greatest(ai_rate_pauses.until, excluded.until)`,
      [key, ms],
    );
  }
}

/**
 * The store in this process's memory: for embedded PGlite, whose database no other process can
 * open, so this process's calls are all the deployment's calls.
 */
export class MemoryRateLimitStore implements RateLimitStore {
  private readonly calls = new Map<string, { at: number; tokens: number; id: string }[]>();
  private readonly pauses = new Map<string, number>();
  private counter = 0;

  async tryAcquire(key: string, tokens: number, limits: Required<RateLimits>): Promise<Admission> {
    const now = Date.now();
    const paused = (this.pauses.get(key) ?? 0) - now;
    if (paused > 0) return { ok: false, waitMs: paused + SLACK_MS };
    if (!limits.requests && !limits.tokens) return { ok: true };
    const window = (this.calls.get(key) ?? []).filter((c) => c.at > now - limits.windowMs);
    this.calls.set(key, window);
    const wait = windowWait(window, now, tokens, limits);
    if (wait > 0) return { ok: false, waitMs: Math.ceil(wait) };
    const id = String(++this.counter);
    window.push({ at: now, tokens, id });
    return { ok: true, call: id };
  }

  async finish(key: string, call: string): Promise<void> {
    const window = this.calls.get(key) ?? [];
    const entry = window.find((c) => c.id === call);
    if (!entry) return;
    entry.at = Math.max(entry.at, Date.now());
    // The log stays in time order, as windowWait reads it.
    window.sort((a, b) => a.at - b.at);
  }

  async pause(key: string, ms: number): Promise<void> {
    this.pauses.set(key, Math.max(this.pauses.get(key) ?? 0, Date.now() + ms));
  }
}

/** The subset of an ioredis client the Redis store uses. */
export interface RedisLike {
  eval(script: string, keys: number, ...args: (string | number)[]): Promise<unknown>;
  quit(): Promise<unknown>;
}

/**
 * Admission as one Lua script, atomic on the Redis server and on its clock: a sorted set per
 * key holds the window's calls (score: time in ms, member: `<id>:<tokens>`), a key with a TTL the
 * pause. Returns 0 when admitted, else the wait in ms.
 */
const ACQUIRE = `
local calls, pause = KEYS[1], KEYS[2]
local requests, tokenLimit, tokens, window, id = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local paused = redis.call('PTTL', pause)
if paused > 0 then return paused + ${SLACK_MS} end
if requests <= 0 and tokenLimit <= 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - window)
local entries = redis.call('ZRANGE', calls, 0, -1, 'WITHSCORES')
local n = #entries / 2
local wait = 0
if requests > 0 and n + 1 > requests then
  wait = tonumber(entries[(n - requests + 1) * 2]) + window - now
end
if tokenLimit > 0 then
  local held = 0
  for i = 1, n do held = held + tonumber(string.match(entries[i * 2 - 1], ':(%d+)$')) end
  local i = 1
  while held + tokens > tokenLimit and i <= n do
    held = held - tonumber(string.match(entries[i * 2 - 1], ':(%d+)$'))
    local w = tonumber(entries[i * 2]) + window - now
    if w > wait then wait = w end
    i = i + 1
  end
end
if wait > 0 then return wait + ${SLACK_MS} end
redis.call('ZADD', calls, now, id .. ':' .. tokens)
redis.call('PEXPIRE', calls, window)
return 0
`;

/** The call ended: it counts from now (only if still in the window's log). */
const FINISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', 'GT', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
`;

const PAUSE = `
local current = redis.call('PTTL', KEYS[1])
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 0
`;

/** The store in Redis (`REDIS_URL`), for deployments that have one. */
export class RedisRateLimitStore implements RateLimitStore {
  private counter = 0;
  /** Each key's window, so the log of a finished call lives as long as the window it counts in. */
  private readonly windows = new Map<string, number>();
  private readonly instance = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

  constructor(
    private readonly redis: RedisLike,
    private readonly prefix = 'tributary:ai-rate',
  ) {}

  async tryAcquire(key: string, tokens: number, limits: Required<RateLimits>): Promise<Admission> {
    const id = `${this.instance}-${++this.counter}`;
    const wait = Number(await this.redis.eval(ACQUIRE, 2, `${this.prefix}:${key}:calls`, `${this.prefix}:${key}:pause`, limits.requests, limits.tokens, tokens, limits.windowMs, id));
    if (wait > 0) return { ok: false, waitMs: wait };
    if (limits.requests <= 0 && limits.tokens <= 0) return { ok: true };
    this.windows.set(key, limits.windowMs);
    return { ok: true, call: `${id}:${tokens}` };
  }

  async finish(key: string, call: string): Promise<void> {
    await this.redis.eval(FINISH, 1, `${this.prefix}:${key}:calls`, call, this.windows.get(key) ?? 60_000);
  }

  async pause(key: string, ms: number): Promise<void> {
    await this.redis.eval(PAUSE, 1, `${this.prefix}:${key}:pause`, Math.max(1, Math.ceil(ms)));
  }

  async close(): Promise<void> {
    await this.redis.quit();
  }
}

export interface LimitedProviderOptions {
  /** Calls in flight at once in this process (shared by the providers given the same function). */
  slots?: LimitFunction;
  /** The provider's rate limits (none: only the pauses 429s set), counted in `store`. */
  rate?: { limits?: RateLimits; store: RateLimitStore };
}

/**
 * An {@link LlmProvider} within its limits. A call first takes one of the process's call slots
 * (so only the HTTP call holds one: everything before and after it, in every layer, runs
 * outside), then waits for room in the provider's shared rate window; it waits, it does not
 * fail. A 429 from the provider pauses the provider for every process sharing the store, for its
 * `Retry-After` (the chain's retry then waits it out too).
 */
export class LimitedProvider implements LlmProvider {
  readonly provider: string;
  readonly model: string;
  private readonly limits: Required<RateLimits>;

  constructor(
    private readonly inner: LlmProvider,
    private readonly options: LimitedProviderOptions,
  ) {
    this.provider = inner.provider;
    this.model = inner.model;
    const limits = options.rate?.limits ?? {};
    this.limits = { requests: limits.requests ?? 0, tokens: limits.tokens ?? 0, windowMs: limits.windowMs ?? 60_000 };
  }

  estimateTokens(input: AnalysisInput): number {
    return this.inner.estimateTokens(input);
  }

  cacheKey(input: AnalysisInput): string {
    return this.inner.cacheKey(input);
  }

  analyze(input: AnalysisInput, options: AnalyzeOptions = {}): Promise<AnalysisResult> {
    const call = () => this.call(input, options);
    return this.options.slots ? this.options.slots(call) : call();
  }

  private async call(input: AnalysisInput, options: AnalyzeOptions): Promise<AnalysisResult> {
    const store = this.options.rate?.store;
    let call: string | undefined;
    if (store) {
      // Without limits this only looks for a pause another worker's 429 set.
      const tokens = this.limits.tokens > 0 ? this.inner.estimateTokens(input) : 0;
      if (this.limits.tokens > 0 && tokens > this.limits.tokens) {
        throw new AiError('PROVIDER_REJECTED', `${this.provider}: one call needs about ${tokens} tokens, more than its limit of ${this.limits.tokens} per window`, { provider: this.provider });
      }
      for (;;) {
        const admission = await store.tryAcquire(this.provider, tokens, this.limits);
        if (admission.ok) {
          call = admission.call;
          break;
        }
        await sleep(admission.waitMs, options.signal);
      }
    }
    try {
      return await this.inner.analyze(input, options);
    } catch (error) {
      if (store && isAiError(error) && error.code === 'RATE_LIMITED' && error.retryAfterMs) await store.pause(this.provider, error.retryAfterMs).catch(() => {});
      throw error;
    } finally {
      // Best effort: a call whose end is not recorded still counts from its admission.
      if (store && call !== undefined) await store.finish(this.provider, call).catch(() => {});
    }
  }

}
