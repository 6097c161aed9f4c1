import { createHash } from 'node:crypto';
import { countsNothing, neverFits, RateLimitStoreError, type Admission, type RateLimitStore, type WindowLimits } from './window.ts';

/** The subset of an ioredis client the Redis store uses (core does not depend on a Redis client). */
export interface RedisLike {
  evalsha(sha: string, keys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, keys: number, ...args: (string | number)[]): Promise<unknown>;
  quit(): Promise<unknown>;
  disconnect(): void;
  readonly status: string;
}

/**
 * Admission as one Lua script, atomic on the Redis server and on its clock: a sorted set per key
 * holds the window's calls (score: time in ms, member: `<id>:<cost>`), a key with a TTL the
 * pause. The same arithmetic as windowWait. KEYS: calls, pause; ARGV: requests, cost limit, cost,
 * window (ms), id. Returns 0 when admitted, else the wait in ms.
 */
const ACQUIRE = `
local calls, pause = KEYS[1], KEYS[2]
local requests, costLimit, cost, window, id = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local paused = redis.call('PTTL', pause)
if paused > 0 then return paused end
if requests <= 0 and costLimit <= 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - window)
local entries = redis.call('ZRANGE', calls, 0, -1, 'WITHSCORES')
local n = #entries / 2
local wait = 0
if requests > 0 and n + 1 > requests then
  wait = tonumber(entries[(n - requests + 1) * 2]) + window - now
end
if costLimit > 0 then
  local held = 0
  for i = 1, n do held = held + tonumber(string.match(entries[i * 2 - 1], ':(%d+)$')) end
  local i = 1
  while held + cost > costLimit and i <= n do
    held = held - tonumber(string.match(entries[i * 2 - 1], ':(%d+)$'))
    local w = tonumber(entries[i * 2]) + window - now
    if w > wait then wait = w end
    i = i + 1
  end
end
if wait > 0 then return wait end
redis.call('ZADD', calls, now, id .. ':' .. cost)
redis.call('PEXPIRE', calls, window)
return 0
`;

/** The call ended: it counts from now (only if still in the window's log). KEYS: calls; ARGV: member, window. */
const FINISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', 'GT', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
`;

/** KEYS: pause; ARGV: ms. A pause only ever lengthens. */
const PAUSE = `
local current = redis.call('PTTL', KEYS[1])
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 0
`;

const sha = (script: string) => createHash('sha1').update(script).digest('hex');
const SCRIPTS = { acquire: { text: ACQUIRE, sha: sha(ACQUIRE) }, finish: { text: FINISH, sha: sha(FINISH) }, pause: { text: PAUSE, sha: sha(PAUSE) } };

/**
 * The {@link RateLimitStore} in Redis, shared by every process using the same Redis and prefix:
 * for `key`, a sorted set `<prefix>:<key>:calls` (expiring a window after its newest call) and a
 * pause `<prefix>:<key>:pause`. Costs are whole numbers. It fails as fast as its client does: a
 * client that queues nothing while disconnected makes a down Redis an error at once.
 */
export class RedisRateLimitStore implements RateLimitStore {
  private counter = 0;
  private readonly instance = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

  /** @param prefix the keys' prefix, e.g. `<namespace>:upload-window` */
  constructor(
    private readonly redis: RedisLike,
    private readonly prefix: string,
  ) {}

  async tryAcquire(key: string, cost: number, limits: WindowLimits): Promise<Admission> {
    if (neverFits(cost, limits)) return { ok: false, waitMs: Infinity };
    const id = `${this.instance}-${++this.counter}`;
    const wait = await this.run('acquire', [`${this.prefix}:${key}:calls`, `${this.prefix}:${key}:pause`], [limits.requests, limits.cost, cost, limits.windowMs, id]);
    if (wait > 0) return { ok: false, waitMs: wait };
    if (countsNothing(limits)) return { ok: true };
    // The window rides along, so a finished call's log lives as long as the window it counts in.
    return { ok: true, call: `${limits.windowMs}/${id}:${cost}` };
  }

  async finish(key: string, call: string): Promise<void> {
    const slash = call.indexOf('/');
    await this.run('finish', [`${this.prefix}:${key}:calls`], [call.slice(slash + 1), call.slice(0, slash)]);
  }

  async pause(key: string, ms: number): Promise<void> {
    await this.run('pause', [`${this.prefix}:${key}:pause`], [Math.max(1, Math.ceil(ms))]);
  }

  async close(): Promise<void> {
    // quit() on a client that is not connected would wait for a connection that may never come.
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => this.redis.disconnect());
    else this.redis.disconnect();
  }

  /** Runs a script by its hash, sending it whole once when Redis does not have it (new, restarted or flushed). */
  private async run(script: keyof typeof SCRIPTS, keys: string[], args: (string | number)[]): Promise<number> {
    const { text, sha } = SCRIPTS[script];
    let answer: unknown;
    try {
      try {
        answer = await this.redis.evalsha(sha, keys.length, ...keys, ...args);
      } catch (error) {
        if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
        answer = await this.redis.eval(text, keys.length, ...keys, ...args);
      }
    } catch (error) {
      throw new RateLimitStoreError(`the rate limit's Redis did not answer: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    if (typeof answer !== 'number') throw new RateLimitStoreError(`the rate limit's Redis answered ${JSON.stringify(answer)}, not a number of ms`);
    return answer;
  }
}
